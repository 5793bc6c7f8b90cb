/* libbase Trim: leading and trailing whitespace removed. */
#pragma once
#include <string>
namespace android { namespace base {
inline std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n\r\f\v"); if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\n\r\f\v"); return s.substr(b, e - b + 1);
}
}}
