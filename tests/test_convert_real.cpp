// `mc convert` without a card on real pretrained weights: the CIFAR-10 ResNet-20 checkpoint (legacy
// pickle format) in the shared data folder next to the repository (CMake disables this file when it is
// absent). Every tensor is checked against values recorded with torch.load.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "mc/mc.hpp"
#include "mc/models/models.hpp"

namespace fs = std::filesystem;
using mc::Tensor;

namespace {
std::string shared_data(const std::string& name) { return std::string(MC_SOURCE_DIR) + "/../shared/data/" + name; }
}  // namespace

TEST_CASE("models: raw conversion of the ResNet-20 CIFAR-10 checkpoint", "[models][convert]") {
  std::ifstream jf(std::string(MC_SOURCE_DIR) + "/tests/fixtures/checkpoints/resnet20_expected.json");
  REQUIRE(jf.good());
  auto exp = nlohmann::json::parse(jf);
  const std::string src = shared_data(exp["file"].get<std::string>());
  REQUIRE(fs::exists(src));  // shared data is required (CMake disables this file without it)
  mc::models::Converted c = mc::models::convert_checkpoint_raw(src);
  const std::string out = (fs::temp_directory_path() / ("mc_test_resnet20_" + std::to_string(::getpid()) + ".safetensors")).string();
  mc::models::save_converted(c, out);
  auto loaded = mc::io::load_safetensors(out);
  const auto& recs = exp["state_dict"];
  REQUIRE(loaded.size() == recs.size());
  for (size_t k = 0; k < loaded.size(); ++k) {
    const auto& r = recs[k];
    const std::string name = r["name"].get<std::string>();
    INFO(name);
    REQUIRE(name.rfind("module.", 0) == 0);
    CHECK(loaded[k].first == name.substr(7));
    const Tensor& t = loaded[k].second;
    CHECK(t.shape() == r["shape"].get<mc::Shape>());
    std::vector<double> v = t.to(mc::DType::F64).to_vector<double>();
    double sum = 0, sumsq = 0;
    for (double x : v) sum += x, sumsq += x * x;
    CHECK(std::abs(sum - r["sum"].get<double>()) <= 1e-6 * (1 + std::abs(r["sum"].get<double>())));
    CHECK(std::abs(sumsq - r["sumsq"].get<double>()) <= 1e-6 * (1 + r["sumsq"].get<double>()));
    for (const auto& s : r["samples"]) CHECK(v.at(s[0].get<size_t>()) == s[1].get<double>());
  }
  CHECK(mc::io::SafetensorsFile::open(out).metadata().at(mc::models::kFormatKey) == mc::models::kRawFormat);
  fs::remove(out);
}
