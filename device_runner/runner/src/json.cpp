#include "json.h"

#include <cmath>
#include <cstdio>

namespace auditor {

std::string json_escape(const std::string &s)
{
   std::string o = "\"";
   for (unsigned char c : s) {
      switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
         if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            o += buf;
         } else {
            o += static_cast<char>(c);
         }
      }
   }
   return o + "\"";
}

void Json::comma()
{
   if (after_key_) {
      after_key_ = false;
      return;
   }
   if (!first_.empty()) {
      if (!first_.back())
         out_ += ',';
      first_.back() = false;
   }
}

Json &Json::begin_object() { comma(); out_ += '{'; first_.push_back(true); return *this; }
Json &Json::end_object() { out_ += '}'; first_.pop_back(); return *this; }
Json &Json::begin_array() { comma(); out_ += '['; first_.push_back(true); return *this; }
Json &Json::end_array() { out_ += ']'; first_.pop_back(); return *this; }

Json &Json::key(const std::string &k)
{
   comma();
   out_ += json_escape(k) + ':';
   after_key_ = true;
   return *this;
}

Json &Json::value(const std::string &v) { comma(); out_ += json_escape(v); return *this; }
Json &Json::value(const char *v) { return value(std::string(v)); }
Json &Json::value(long long v) { comma(); out_ += std::to_string(v); return *this; }
Json &Json::value(bool v) { comma(); out_ += v ? "true" : "false"; return *this; }
Json &Json::null() { comma(); out_ += "null"; return *this; }

Json &Json::value(double v)
{
   comma();
   if (!std::isfinite(v)) {
      out_ += "null";  // JSON has no NaN/inf
   } else {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      out_ += buf;
   }
   return *this;
}

Json &Json::values(const std::vector<long long> &v)
{
   begin_array();
   for (auto x : v)
      value(x);
   return end_array();
}

Json &Json::values(const std::vector<double> &v)
{
   begin_array();
   for (auto x : v)
      value(x);
   return end_array();
}

Json &Json::values(const std::vector<std::string> &v)
{
   begin_array();
   for (const auto &x : v)
      value(x);
   return end_array();
}

}  // namespace auditor
