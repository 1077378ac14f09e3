// A scratch directory under /tmp, removed with everything in it at scope exit.
#pragma once

#include <stdlib.h>

#include <cstdlib>
#include <string>

namespace bitdex::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "bitdex_test") {
    std::string tmpl = "/tmp/" + prefix + "_XXXXXX";
    path_ = ::mkdtemp(&tmpl[0]);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace bitdex::test
