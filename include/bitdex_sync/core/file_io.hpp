// Thin POSIX helpers that turn failures into Error(Io) naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bitdex::fileio {

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

Fd open_file(const std::string& path, int flags, int mode = 0600);
void write_all(int fd, const void* data, size_t len, const std::string& path);
void pwrite_all(int fd, const void* data, size_t len, uint64_t offset, const std::string& path);
// Reads up to len bytes at offset; returns bytes read (short only at EOF).
size_t pread_full(int fd, void* data, size_t len, uint64_t offset, const std::string& path);
uint64_t file_size(int fd, const std::string& path);
void fdatasync_or_throw(int fd, const std::string& path);
void fsync_dir(const std::string& dir);
// Creates dir (mode 0700) and missing parents.
void make_dirs(const std::string& dir);
bool exists(const std::string& path);
// Names of the entries of dir (no . and ..).
std::vector<std::string> list_dir(const std::string& dir);
// Writes dir/name durably and atomically: temp file, fsync, rename, fsync dir.
void write_file_atomic(const std::string& dir, const std::string& name, const std::string& bytes);
std::string read_file(const std::string& path);

}  // namespace bitdex::fileio
