/* libbase ReadFileToString, as ashmem-dev.cpp uses it (the whole file into *out). */
#pragma once
#include <fstream>
#include <sstream>
#include <string>
namespace android { namespace base {
inline bool ReadFileToString(const std::string& path, std::string* out) {
  std::ifstream f(path); if (!f) return false; std::stringstream s; s << f.rdbuf(); *out = s.str(); return true;
}
}}
