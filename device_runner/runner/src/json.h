// A small JSON writer: the runner's results go to the Python side as one JSON document.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace auditor {

class Json {
 public:
   Json &begin_object();
   Json &end_object();
   Json &begin_array();
   Json &end_array();
   Json &key(const std::string &k);
   Json &value(const std::string &v);
   Json &value(const char *v);
   Json &value(double v);
   Json &value(long long v);
   Json &value(int v) { return value(static_cast<long long>(v)); }
   Json &value(bool v);
   Json &null();
   Json &values(const std::vector<long long> &v);
   Json &values(const std::vector<double> &v);
   Json &values(const std::vector<std::string> &v);
   const std::string &str() const { return out_; }

 private:
   void comma();
   std::string out_;
   std::vector<bool> first_;  // per open container: nothing written in it yet
   bool after_key_ = false;
};

std::string json_escape(const std::string &s);

}  // namespace auditor
