// mc/core/error.hpp — the one exception type of mc.
//
// Every failure that a user can cause (bad shapes, corrupt files, unknown keys) throws mc::Error with a
// message that names the op / file / tensor and the reason. MC_CHECK(cond, parts...) builds the message
// from its parts with operator<< only when the check fails.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mc {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] inline void fail(Parts&&... parts) {
  std::ostringstream s;
  (s << ... << std::forward<Parts>(parts));
  throw Error(s.str());
}

}  // namespace mc

#define MC_CHECK(cond, ...)                     \
  do {                                          \
    if (!(cond)) [[unlikely]] ::mc::fail(__VA_ARGS__); \
  } while (0)
