// TensorRT backend (TensorRT 10 C++ API: name-based I/O, setInputShape, setTensorAddress,
// enqueueV3). Compiled only when CMake found TensorRT (SRBENCH_WITH_TENSORRT).
//
// An engine carries no ONNX metadata, so the srdeploy contract comes from beside it: --meta FILE
// (a JSON sidecar or the source .onnx), else the sidecar `srdeploy build-engine` writes
// (ENGINE.json, or ENGINE-stem.json; format srdeploy.trt-engine/1, model metadata under
// "metadata"), else ENGINE-stem.onnx. A build-engine sidecar is checked like the Python adapter
// (runtime/backends/trt.py, check_sidecar) does: engine sha256, TensorRT version (a
// version-compatible engine loads on the same major version, never on an older runtime than the
// one that built it), GPU name and compute capability, or the hardware-compatibility level it was
// built for (ampere_plus: compute capability >= 8.0; same_compute_capability). A
// version-compatible plan embeds its lean runtime (host code), which TensorRT only deserializes
// after IRuntime::setEngineHostCodeAllowed(true).

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <sstream>

#include "common.h"
#include "sha256.h"

namespace srbench {

namespace {

namespace fs = std::filesystem;

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw UserError(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(status) + " (" +
                    cudaGetErrorString(status) + ")");
  }
}

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) {
      std::cerr << "srbench: TensorRT: " << msg << "\n";
      if (severity <= Severity::kERROR) {
        std::lock_guard<std::mutex> lock(mu_);
        last_error_ = msg;
      }
    }
  }
  std::string last_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_error_;
  }

 private:
  std::mutex mu_;
  std::string last_error_;
};

Logger& logger() {
  static Logger l;
  return l;
}

std::string dims_str(const nvinfer1::Dims& d) {
  std::string out;
  for (int i = 0; i < d.nbDims; ++i) out += (i ? "x" : "") + std::to_string(d.d[i]);
  return out;
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

// srdeploy metadata_props from a JSON sidecar: either the props at top level, or under
// "metadata" / "metadata_props" / "srdeploy"; a top-level "precision" (what the engine computes
// in) fills srdeploy.precision when the props lack it.
Json read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError("cannot read metadata file " + path);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    return Json::parse(text);
  } catch (const std::exception& e) {
    throw UserError(path + ": unreadable metadata JSON (" + e.what() + ")");
  }
}

std::map<std::string, std::string> sidecar_props(const std::string& path, const Json& doc) {
  const Json* obj = &doc;
  if (obj->is_object() && !obj->find("srdeploy.format")) {
    for (const char* key : {"metadata", "metadata_props", "srdeploy"}) {
      const Json* sub = obj->find(key);
      if (sub && sub->is_object()) {
        obj = sub;
        break;
      }
    }
  }
  if (!obj->is_object()) throw UserError(path + ": expected a JSON object of srdeploy metadata");
  std::map<std::string, std::string> props;
  for (const auto& kv : obj->members()) props[kv.first] = kv.second.scalar_text();
  const Json* precision = doc.is_object() ? doc.find("precision") : nullptr;
  if (!props.count("srdeploy.precision") && precision && precision->is_string()) {
    props["srdeploy.precision"] = precision->as_string();
  }
  return props;
}

// The contract for an engine; precision_known is false when it came from an .onnx file (whose
// srdeploy.precision describes the ONNX weights, not what the engine was built to compute in).
ModelInfo engine_model_info(const Options& opt, bool& precision_known, Json& sidecar) {
  std::vector<std::string> candidates;
  if (!opt.meta_path.empty()) {
    candidates.push_back(opt.meta_path);
  } else {
    const fs::path engine(opt.model);
    fs::path stem = engine;
    stem.replace_extension();
    candidates = {opt.model + ".json", stem.string() + ".json", stem.string() + ".onnx"};
  }
  for (const auto& c : candidates) {
    if (!fs::is_regular_file(c)) continue;
    const bool onnx = fs::path(c).extension() == ".onnx";
    std::map<std::string, std::string> props;
    if (onnx) {
      props = onnx_metadata_props(c);
    } else {
      sidecar = read_json(c);
      props = sidecar_props(c, sidecar);
    }
    precision_known = !onnx && props.count("srdeploy.precision");
    return parse_model_info(props, c);
  }
  if (!opt.meta_path.empty()) throw UserError("metadata file not found: " + opt.meta_path);
  std::string tried;
  for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c;
  throw UserError(opt.model + ": a TensorRT engine carries no srdeploy metadata and none was found beside it "
                  "(tried " + tried + "). Pass --meta with the engine's .onnx or its metadata JSON.");
}

std::string text_of(const Json* j) { return j ? j->scalar_text() : ""; }

// "10.16.1.11" -> {10, 16, 1, 11}.
std::vector<int> version_parts(const std::string& v) {
  std::vector<int> parts;
  std::stringstream in(v);
  std::string item;
  while (std::getline(in, item, '.')) {
    if (item.empty() || !std::all_of(item.begin(), item.end(), [](unsigned char c) { return std::isdigit(c); })) break;
    parts.push_back(std::stoi(item));
  }
  return parts;
}

// <0, 0, >0 over the parts both versions have ("10.16.1" equals "10.16.1.11").
int compare_versions(const std::vector<int>& a, const std::vector<int>& b) {
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}

// What a checked sidecar asks of the runtime.
struct SidecarRules {
  bool version_compatible = false;  // setEngineHostCodeAllowed(true) before deserializing
};

// A build-engine sidecar must describe this engine, this TensorRT and this GPU (engines are
// specific to both unless built compatible); same rules and fixes as check_sidecar() in
// runtime/backends/trt.py.
SidecarRules check_sidecar(const Json& side, const std::string& engine, const std::string& engine_sha,
                           const std::string& trt_version, const std::string& gpu_name, int cc_major, int cc_minor) {
  SidecarRules rules;
  if (!side.is_object()) return rules;
  const std::string rebuild = "rebuild the engine on this machine with `srdeploy build-engine MODEL.onnx -o " +
                              engine + "`";
  const Json* format = side.find("format");
  if (format && text_of(format) != "srdeploy.trt-engine/1") {
    throw UserError(engine + ": sidecar format '" + text_of(format) + "' is not 'srdeploy.trt-engine/1'; " + rebuild);
  }
  if (!format) return rules;  // a plain metadata JSON (no build record): nothing more to check
  const std::string sha = text_of(side.find("engine_sha256"));
  if (!sha.empty() && sha != engine_sha) {
    throw UserError(engine + ": its sidecar describes a different engine (sha256 mismatch); " + rebuild);
  }
  const std::string built = text_of(side.find("tensorrt_version"));
  rules.version_compatible = text_of(side.find("version_compatible")) == "true";
  const std::vector<int> b = version_parts(built), r = version_parts(trt_version);
  if (!built.empty() && (b.empty() || compare_versions(b, r) != 0)) {
    const bool same_major = !b.empty() && !r.empty() && b[0] == r[0];
    if (!rules.version_compatible) {
      throw UserError(engine + ": built with TensorRT " + built + ", this is TensorRT " + trt_version +
                      "; engines only load on the TensorRT version that built them (unless built with "
                      "--version-compatible): " + rebuild);
    }
    if (!same_major || compare_versions(b, r) > 0) {
      throw UserError(engine + ": built with TensorRT " + built + ", this is TensorRT " + trt_version +
                      "; version-compatible engines load on the same major version, at or after the one that "
                      "built them: " + rebuild);
    }
  }
  std::string hw = text_of(side.find("hardware_compatibility"));
  for (auto& ch : hw) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const std::string cc = std::to_string(cc_major) + "." + std::to_string(cc_minor);
  const std::string built_gpu = text_of(side.find("gpu_name"));
  const std::string built_cc = text_of(side.find("compute_capability"));
  if (hw == "ampere_plus") {
    if (cc_major < 8) {
      throw UserError(engine + ": built hardware-compatible for Ampere and newer GPUs (compute capability >= 8.0), "
                      "this GPU is " + gpu_name + " (" + cc + "): " + rebuild);
    }
  } else if (hw == "same_compute_capability") {
    if (built_cc != cc) {
      throw UserError(engine + ": built for GPUs of compute capability " + built_cc + ", this GPU is " + gpu_name +
                      " (" + cc + "): " + rebuild);
    }
  } else if (hw.empty() || hw == "none") {
    if (!built_gpu.empty() && !built_cc.empty() && (built_gpu != gpu_name || built_cc != cc)) {
      throw UserError(engine + ": built for " + built_gpu + " (compute capability " + built_cc + "), this GPU is " +
                      gpu_name + " (" + cc + "); engines are specific to the GPU that built them (unless built with "
                      "--hardware-compatible): " + rebuild);
    }
  } else {
    throw UserError(engine + ": unknown hardware_compatibility '" + hw + "' in its sidecar (expected none, "
                    "ampere_plus or same_compute_capability); " + rebuild);
  }
  return rules;
}

// The library's own version, major.minor.patch.build like Python's tensorrt.__version__ (these
// functions exist since TensorRT 10.0; getInferLibVersion() has no build number).
std::string trt_version_string() {
  return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
         std::to_string(getInferLibPatchVersion()) + "." + std::to_string(getInferLibBuildVersion());
}

std::string cuda_version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

class TrtBackend final : public Backend {
 public:
  explicit TrtBackend(const Options& opt) {
    if (opt.device == "cpu") throw UserError("--backend trt runs on a GPU: use --device cuda (or cuda:N)");
    bool precision_known = false;
    Json sidecar;
    info = engine_model_info(opt, precision_known, sidecar);
    if (!opt.precision.empty()) {
      info.precision = opt.precision;
    } else if (!precision_known) {
      // Never record a precision we do not know: the engine may be FP16 built from an FP32 ONNX.
      throw UserError(opt.model + ": the engine's precision is not recorded in " + info.source +
                      "; pass --precision fp16|fp32 (as it was built)");
    }
    backend = "tensorrt";
    device = "cuda:" + std::to_string(opt.device_id);
    providers = {};
    io = "input and output in device memory; enqueueV3 + stream synchronize";

    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (opt.device_id < 0 || opt.device_id >= count) {
      throw UserError("--device " + opt.device + ": there are " + std::to_string(count) + " CUDA devices");
    }
    cuda_check(cudaSetDevice(opt.device_id), "cudaSetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, opt.device_id), "cudaGetDeviceProperties");
    gpu = prop.name;
    int rt = 0, drv = 0;
    cuda_check(cudaRuntimeGetVersion(&rt), "cudaRuntimeGetVersion");
    cuda_check(cudaDriverGetVersion(&drv), "cudaDriverGetVersion");
    versions["tensorrt"] = trt_version_string();
    versions["cuda_runtime"] = cuda_version_string(rt);
    versions["cuda_driver"] = cuda_version_string(drv);

    std::ifstream f(opt.model, std::ios::binary);
    if (!f) throw UserError("cannot read TensorRT engine " + opt.model);
    const std::vector<char> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (blob.empty()) throw UserError("TensorRT engine " + opt.model + " is empty");
    Sha256 sha;
    sha.update(blob.data(), blob.size());
    const SidecarRules rules =
        check_sidecar(sidecar, opt.model, sha.hexdigest(), versions["tensorrt"], gpu, prop.major, prop.minor);

    runtime_.reset(nvinfer1::createInferRuntime(logger()));
    if (!runtime_) throw UserError("cannot create the TensorRT runtime: " + logger().last_error());
    // A version-compatible plan carries the lean runtime that runs it: TensorRT refuses to
    // deserialize that host code unless the runtime allows it.
    if (rules.version_compatible) runtime_->setEngineHostCodeAllowed(true);
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) {
      throw UserError("cannot load TensorRT engine " + opt.model + ": " + logger().last_error() +
                      " (engines only load with the TensorRT version and GPU they were built for; rebuild it "
                      "with `srdeploy build-engine`)");
    }
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      const bool is_input = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
      if (engine_->getTensorDataType(name) != nvinfer1::DataType::kFLOAT) {
        throw UserError(opt.model + ": tensor '" + std::string(name) +
                        "' is not float32; srdeploy engines keep float32 I/O (precision is internal)");
      }
      (is_input ? inputs_ : outputs_).push_back(name);
    }
    if (inputs_.size() != 1 || outputs_.size() != 1) {
      throw UserError(opt.model + ": expected one input and one output tensor, found " +
                      std::to_string(inputs_.size()) + " and " + std::to_string(outputs_.size()));
    }
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw UserError("cannot create a TensorRT execution context: " + logger().last_error());
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~TrtBackend() override {
    // Errors while tearing down cannot be reported usefully; the objects go in reverse order.
    if (stream_) cudaStreamDestroy(stream_);
    if (d_in_) cudaFree(d_in_);
    if (d_out_) cudaFree(d_out_);
    context_.reset();
    engine_.reset();
    runtime_.reset();
  }

  void prepare(const std::vector<std::int64_t>& in_shape, const std::vector<float>& input,
               const std::vector<std::int64_t>& out_shape) override {
    const char* in = inputs_[0].c_str();
    const char* out = outputs_[0].c_str();
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int>(in_shape.size());
    for (std::size_t i = 0; i < in_shape.size(); ++i) dims.d[i] = in_shape[i];
    if (!context_->setInputShape(in, dims)) {
      std::string range;
      if (engine_->getNbOptimizationProfiles() > 0) {
        range = ": the engine's profile 0 accepts " +
                dims_str(engine_->getProfileShape(in, 0, nvinfer1::OptProfileSelector::kMIN)) + " to " +
                dims_str(engine_->getProfileShape(in, 0, nvinfer1::OptProfileSelector::kMAX));
      }
      throw UserError("TensorRT engine rejects input shape " + shape_str(in_shape) + range +
                      "; rebuild the engine with a wider shape profile");
    }
    const nvinfer1::Dims got = context_->getTensorShape(out);
    std::vector<std::int64_t> got_v(got.d, got.d + std::max(0, got.nbDims));
    if (got_v != out_shape) {
      throw UserError(info.source + ": engine output is " + dims_str(got) + " for input " + shape_str(in_shape) +
                      ", expected " + shape_str(out_shape) + " (scale " + std::to_string(info.scale) +
                      " from metadata); the engine and its metadata disagree");
    }
    out_count_ = 1;
    for (auto d : out_shape) out_count_ *= static_cast<std::size_t>(d);
    cuda_check(cudaMalloc(&d_in_, input.size() * sizeof(float)), "cudaMalloc(input)");
    cuda_check(cudaMalloc(&d_out_, out_count_ * sizeof(float)), "cudaMalloc(output)");
    cuda_check(cudaMemcpy(d_in_, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice),
               "cudaMemcpy(input)");
    if (!context_->setTensorAddress(in, d_in_) || !context_->setTensorAddress(out, d_out_)) {
      throw UserError("TensorRT setTensorAddress failed: " + logger().last_error());
    }
    if (!context_->allInputDimensionsSpecified()) throw UserError("TensorRT: not all input dimensions are set");
  }

  void run() override {
    if (!context_->enqueueV3(stream_)) throw UserError("TensorRT enqueueV3 failed: " + logger().last_error());
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  double output_sum() override {
    std::vector<float> host(out_count_);
    cuda_check(cudaMemcpy(host.data(), d_out_, out_count_ * sizeof(float), cudaMemcpyDeviceToHost),
               "cudaMemcpy(output)");
    double sum = 0.0;
    for (float v : host) sum += static_cast<double>(v);
    return sum;
  }

 private:
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::vector<std::string> inputs_, outputs_;
  cudaStream_t stream_ = nullptr;
  void* d_in_ = nullptr;
  void* d_out_ = nullptr;
  std::size_t out_count_ = 0;
};

}  // namespace

std::unique_ptr<Backend> open_tensorrt(const Options& opt) { return std::make_unique<TrtBackend>(opt); }

}  // namespace srbench
