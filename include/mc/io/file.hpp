// mc/io/file.hpp — reading files through memory maps and writing them atomically.
//
// MappedFile maps a whole file copy-on-write (the file itself is never modified); tensors loaded from it can alias the mapping (the shared_ptr
// keeps it alive). write_file_atomic writes to "<path>.tmp.<pid>" and renames it over `path`, so a reader
// never sees a half-written file.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mc/core/error.hpp"

namespace mc::io {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MC_CHECK(fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, ": not a regular file");
    }
    auto f = std::shared_ptr<MappedFile>(new MappedFile());
    f->path_ = path;
    f->size_ = size_t(st.st_size);
    if (f->size_ > 0) {
      // Private and writable: writing into a tensor that aliases the mapping copies the page instead of
      // faulting, and never reaches the file.
      void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        fail(path, ": mmap failed (", std::strerror(errno), ")");
      }
      f->data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
    return f;
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

inline std::vector<uint8_t> read_file(const std::string& path) {
  auto f = MappedFile::open(path);
  return std::vector<uint8_t>(f->data(), f->data() + f->size());
}

// Calls write(FILE*) on a temporary file next to `path`, then renames it to `path`. On any failure the
// temporary is removed and `path` is left as it was.
inline void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  MC_CHECK(f, path, ": cannot open for writing (", std::strerror(errno), ")");
  try {
    write(f);
    MC_CHECK(std::fflush(f) == 0 && !std::ferror(f), path, ": write failed (", std::strerror(errno), ")");
    ::fsync(::fileno(f));
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  bool closed = std::fclose(f) == 0;
  if (!closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path, ": cannot write (", std::strerror(errno), ")");
  }
}

inline void write_bytes(std::FILE* f, const void* p, size_t n, const std::string& what) {
  MC_CHECK(n == 0 || std::fwrite(p, 1, n, f) == n, what, ": write failed (", std::strerror(errno), ")");
}

}  // namespace mc::io
