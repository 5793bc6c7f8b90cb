/* Android's property service, for ashmem-dev.cpp on a system without one: property `a.b` is the
 * environment variable ANDROID_PROP_a_b; unset, the caller's default (libbase's own behaviour when a
 * property is not set). */
#pragma once
#include <stdlib.h>
#include <string>
namespace android { namespace base {
inline std::string GetProperty(const std::string& key, const std::string& dflt) {
  std::string name = "ANDROID_PROP_" + key;
  for (auto& c : name) if (c == '.') c = '_';
  const char* v = getenv(name.c_str());
  return v ? std::string(v) : dflt;
}
/* libbase's ParseBool: these words, else the default */
inline bool GetBoolProperty(const std::string& key, bool dflt) {
  std::string v = GetProperty(key, "");
  if (v == "1" || v == "y" || v == "yes" || v == "on" || v == "true") return true;
  if (v == "0" || v == "n" || v == "no" || v == "off" || v == "false") return false;
  return dflt;
}
}}
