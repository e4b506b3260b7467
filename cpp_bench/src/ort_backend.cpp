// ONNX Runtime backend (C++ API over the stable C API). CPU provider always; CUDA provider when
// the linked library has it (decided at run time from Ort::GetAvailableProviders()).

// The C++ wrapper would otherwise fetch the API table in a static initializer and crash later
// with a null pointer when the library is older than the headers; init by hand and explain.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <array>
#include <mutex>

#include "common.h"

namespace srbench {

namespace {

void init_ort_api() {
  static std::once_flag once;
  std::call_once(once, [] {
    const OrtApiBase* base = OrtGetApiBase();
    const OrtApi* api = base->GetApi(ORT_API_VERSION);
    if (api == nullptr) {
      throw UserError(std::string("the ONNX Runtime library (version ") + base->GetVersionString() +
                      ") does not provide C API version " + std::to_string(ORT_API_VERSION) +
                      " that srbench was compiled against: the headers are newer than the library. "
                      "Rebuild with cpp_bench/build.sh against matching headers (or a newer library).");
    }
    Ort::InitApi(api);
  });
}

Ort::Env& ort_env() {
  init_ort_api();
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "srbench");
  return env;
}

std::map<std::string, std::string> read_props(const Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions alloc;
  Ort::ModelMetadata md = session.GetModelMetadata();
  std::map<std::string, std::string> props;
  for (auto& key : md.GetCustomMetadataMapKeysAllocated(alloc)) {
    auto value = md.LookupCustomMetadataMapAllocated(key.get(), alloc);
    props[key.get()] = value ? value.get() : "";
  }
  return props;
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

Ort::Session load_session(const std::string& path, const Ort::SessionOptions& so) {
  try {
    return Ort::Session(ort_env(), path.c_str(), so);
  } catch (const Ort::Exception& e) {
    throw UserError("cannot load ONNX model " + path + ": " + e.what() +
                    " (is it a complete ONNX file? re-export it with `srdeploy export`)");
  }
}

class OrtBackend final : public Backend {
 public:
  explicit OrtBackend(const Options& opt) : session_(nullptr) {
    const auto available = onnxruntime_available_providers();
    const bool want_cuda = opt.device != "cpu";
    Ort::SessionOptions so;
    // Same settings as the Python benchmark: full graph optimisation, sequential execution, the
    // requested intra-op threads; inter-op threads are unused in sequential mode.
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
    so.SetIntraOpNumThreads(opt.threads);
    so.SetInterOpNumThreads(1);
    if (want_cuda) {
      if (std::find(available.begin(), available.end(), "CUDAExecutionProvider") == available.end()) {
        std::string avail;
        for (const auto& p : available) avail += (avail.empty() ? "" : ", ") + p;
        throw UserError("--device " + opt.device + ": this ONNX Runtime library (" + onnxruntime_version() +
                        ") has no CUDAExecutionProvider (available: " + avail +
                        "). Build srbench against an onnxruntime-gpu release (ONNXRUNTIME_ROOT=...) or use --device cpu.");
      }
      OrtCUDAProviderOptions cuda{};
      cuda.device_id = opt.device_id;
      try {
        so.AppendExecutionProvider_CUDA(cuda);
      } catch (const Ort::Exception& e) {
        throw UserError(std::string("cannot enable the CUDA execution provider: ") + e.what() +
                        " (are CUDA and cuDNN libraries on the library path?)");
      }
      providers = {"CUDAExecutionProvider", "CPUExecutionProvider"};
      device = "cuda:" + std::to_string(opt.device_id);
      io = "input copied host->device in each call (IoBinding), output kept on the device";
    } else {
      providers = {"CPUExecutionProvider"};
      device = "cpu";
      io = "host memory, input and output preallocated";
    }
    session_ = load_session(opt.model, so);
    info = parse_model_info(read_props(session_), opt.model);

    Ort::AllocatorWithDefaultOptions alloc;
    if (session_.GetInputCount() != 1 || session_.GetOutputCount() != 1) {
      throw UserError(opt.model + ": expected one input and one output, found " +
                      std::to_string(session_.GetInputCount()) + " and " + std::to_string(session_.GetOutputCount()));
    }
    in_name_ = session_.GetInputNameAllocated(0, alloc).get();
    out_name_ = session_.GetOutputNameAllocated(0, alloc).get();
    // The shape infos are views into the TypeInfo objects: keep those alive.
    const Ort::TypeInfo in_info = session_.GetInputTypeInfo(0);
    const Ort::TypeInfo out_info = session_.GetOutputTypeInfo(0);
    const auto in_type = in_info.GetTensorTypeAndShapeInfo();
    const auto out_type = out_info.GetTensorTypeAndShapeInfo();
    if (in_type.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
        out_type.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || in_type.GetDimensionsCount() != 4) {
      throw UserError(opt.model + ": input '" + in_name_ + "' / output '" + out_name_ +
                      "' must be float32 NCHW tensors (the srdeploy contract)");
    }
    backend = "onnxruntime";
    threads = Json::object();
    threads.set("intra_op", opt.threads);
    threads.set("inter_op", 1);
    versions["onnxruntime"] = onnxruntime_version();
    versions["onnxruntime_headers_api"] = std::to_string(ORT_API_VERSION);
    cuda_ = want_cuda;
    device_id_ = opt.device_id;
  }

  void prepare(const std::vector<std::int64_t>& in_shape, const std::vector<float>& input,
               const std::vector<std::int64_t>& out_shape) override {
    input_ = input;
    in_shape_ = in_shape;
    out_shape_ = out_shape;
    auto cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    input_value_ = Ort::Value::CreateTensor<float>(cpu, input_.data(), input_.size(), in_shape_.data(), in_shape_.size());

    // One untimed run with ORT-allocated output: checks the shape against the metadata's scale
    // with a clear message (a preallocated output would fail with ORT's terse one).
    std::vector<std::int64_t> got;
    try {
      const char* in_names[] = {in_name_.c_str()};
      const char* out_names[] = {out_name_.c_str()};
      auto outs = session_.Run(Ort::RunOptions{nullptr}, in_names, &input_value_, 1, out_names, 1);
      got = outs.at(0).GetTensorTypeAndShapeInfo().GetShape();
    } catch (const Ort::Exception& e) {
      throw UserError("inference failed at input " + shape_str(in_shape_) + ": " + e.what());
    }
    if (got != out_shape_) {
      throw UserError(info.source + ": model returned " + shape_str(got) + " for input " + shape_str(in_shape_) +
                      ", expected " + shape_str(out_shape_) + " (scale " + std::to_string(info.scale) +
                      " from metadata); the model and its metadata disagree");
    }

    if (cuda_) {
      binding_ = std::make_unique<Ort::IoBinding>(session_);
      binding_->BindInput(in_name_.c_str(), input_value_);
      Ort::MemoryInfo gpu("Cuda", OrtDeviceAllocator, device_id_, OrtMemTypeDefault);
      binding_->BindOutput(out_name_.c_str(), gpu);
    } else {
      std::size_t n = 1;
      for (auto d : out_shape_) n *= static_cast<std::size_t>(d);
      output_.assign(n, 0.0f);
      output_value_ = Ort::Value::CreateTensor<float>(cpu, output_.data(), output_.size(), out_shape_.data(),
                                                      out_shape_.size());
    }
  }

  void run() override {
    try {
      if (cuda_) {
        session_.Run(Ort::RunOptions{nullptr}, *binding_);
        binding_->SynchronizeOutputs();
      } else {
        const char* in_names[] = {in_name_.c_str()};
        const char* out_names[] = {out_name_.c_str()};
        session_.Run(Ort::RunOptions{nullptr}, in_names, &input_value_, 1, out_names, &output_value_, 1);
      }
    } catch (const Ort::Exception& e) {
      throw UserError(std::string("inference failed: ") + e.what());
    }
  }

  double output_sum() override {
    const float* data = output_.data();
    std::size_t n = output_.size();
    std::vector<Ort::Value> outs;
    if (cuda_) {
      // The timed output lives on the GPU and this build has no CUDA headers to copy it back:
      // one more run with the output in host memory on the same input gives the same values.
      const char* in_names[] = {in_name_.c_str()};
      const char* out_names[] = {out_name_.c_str()};
      outs = session_.Run(Ort::RunOptions{nullptr}, in_names, &input_value_, 1, out_names, 1);
      data = outs.at(0).GetTensorData<float>();
      n = outs.at(0).GetTensorTypeAndShapeInfo().GetElementCount();
    }
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(data[i]);
    return sum;
  }

 private:
  Ort::Session session_;
  std::string in_name_, out_name_;
  std::vector<std::int64_t> in_shape_, out_shape_;
  std::vector<float> input_, output_;
  Ort::Value input_value_{nullptr};
  Ort::Value output_value_{nullptr};
  std::unique_ptr<Ort::IoBinding> binding_;
  bool cuda_ = false;
  int device_id_ = 0;
};

}  // namespace

std::string onnxruntime_version() {
  init_ort_api();
  return Ort::GetVersionString();
}

std::vector<std::string> onnxruntime_available_providers() {
  init_ort_api();
  return Ort::GetAvailableProviders();
}

int onnxruntime_header_api_version() { return ORT_API_VERSION; }

std::map<std::string, std::string> onnx_metadata_props(const std::string& path) {
  Ort::SessionOptions so;
  // Only the metadata is wanted: skip graph optimisation to load quickly.
  so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_DISABLE_ALL);
  so.SetIntraOpNumThreads(1);
  Ort::Session session = load_session(path, so);
  return read_props(session);
}

std::unique_ptr<Backend> open_onnxruntime(const Options& opt) { return std::make_unique<OrtBackend>(opt); }

}  // namespace srbench
