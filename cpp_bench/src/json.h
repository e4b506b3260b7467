// A small JSON value: enough to write the benchmark result (ordered keys, integers kept as
// integers, doubles round-trip exactly) and to read a TensorRT engine's metadata sidecar.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace srbench {

class Json {
 public:
  enum class Type { Null, Bool, Int, Double, String, Array, Object };

  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool b) : type_(Type::Bool), bool_(b) {}
  Json(int v) : type_(Type::Int), int_(v) {}
  Json(long v) : type_(Type::Int), int_(v) {}
  Json(long long v) : type_(Type::Int), int_(v) {}
  Json(unsigned v) : type_(Type::Int), int_(v) {}
  Json(unsigned long v) : type_(Type::Int), int_(static_cast<std::int64_t>(v)) {}
  Json(double v) : type_(Type::Double), double_(v) {}
  Json(const char* s) : type_(Type::String), string_(s) {}
  Json(std::string s) : type_(Type::String), string_(std::move(s)) {}

  static Json object() { Json j; j.type_ = Type::Object; return j; }
  static Json array() { Json j; j.type_ = Type::Array; return j; }
  template <typename T>
  static Json array_of(const std::vector<T>& items) {
    Json j = array();
    for (const auto& it : items) j.push(Json(it));
    return j;
  }

  // Object: set (replaces an existing key, keeps first-insertion order). Array: push.
  Json& set(const std::string& key, Json value);
  Json& push(Json value);

  Type type() const { return type_; }
  bool is_object() const { return type_ == Type::Object; }
  bool is_string() const { return type_ == Type::String; }
  // Object member or nullptr.
  const Json* find(const std::string& key) const;
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }
  const std::string& as_string() const { return string_; }
  // Numbers as text, strings as themselves (metadata values are strings but be lenient).
  std::string scalar_text() const;

  std::string dump(int indent = 2) const;
  // Throws std::runtime_error("... at offset N") on malformed input.
  static Json parse(const std::string& text);

 private:
  void dump_to(std::string& out, int indent, int depth) const;

  Type type_ = Type::Null;
  bool bool_ = false;
  std::int64_t int_ = 0;
  double double_ = 0.0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace srbench
