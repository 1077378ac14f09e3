// POSIX file helpers with EINTR handling and errno-carrying errors.
#include "bitdex_sync/core/file_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bitdex_sync/core/error.hpp"
#include "bitdex_sync/core/cpp_only.hpp"

namespace bitdex {

void throw_io_error(const std::string& what, const std::string& path, int err) {
  throw Error(ErrorKind::Io, "could not " + what + " \"" + path + "\": " + std::strerror(err));
}

namespace fileio {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd open_file(const std::string& path, int flags, int mode) {
  int fd;
  do fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_io_error("open file", path, errno);
  return Fd(fd);
}

void write_all(int fd, const void* data, size_t len, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io_error("write to file", path, errno);
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void pwrite_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io_error("write to file", path, errno);
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

size_t pread_full(int fd, void* data, size_t len, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, p + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io_error("read file", path, errno);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_io_error("stat file", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

void fdatasync_or_throw(int fd, const std::string& path) {
  int rc;
  do rc = ::fdatasync(fd);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) throw_io_error("fdatasync file", path, errno);
}

void fsync_dir(const std::string& dir) {
  Fd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (::fsync(fd.get()) != 0) throw_io_error("fsync directory", dir, errno);
}

void make_dirs(const std::string& dir) {
  if (dir.empty() || exists(dir)) return;
  size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_io_error("create directory", dir, errno);
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_io_error("open directory", dir, errno);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) throw_io_error("read directory", dir, err);
  return names;
}

void write_file_atomic(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::string tmp = dir + "/" + name + ".tmp";
  std::string final_path = dir + "/" + name;
  {
    Fd fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    write_all(fd.get(), bytes.data(), bytes.size(), tmp);
    fdatasync_or_throw(fd.get(), tmp);
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) throw_io_error("rename file", tmp, errno);
  fsync_dir(dir);
}

std::string read_file(const std::string& path) {
  Fd fd = open_file(path, O_RDONLY);
  uint64_t size = file_size(fd.get(), path);
  std::string out(size, '\0');
  size_t got = pread_full(fd.get(), out.data(), size, 0, path);
  out.resize(got);
  return out;
}

}  // namespace fileio
}  // namespace bitdex
