// Provides' text form and Requirement's matching: the vocabulary every manager routes by.

#include <catch2/catch.hpp>

#include <scale/detail/requirement.hpp>
#include <scale/provides.hpp>

#include <limits>
#include <stdexcept>
#include <string>

using scale::Provides;
using scale::detail::Requirement;

TEST_CASE("parse_provides reads amounts and labels and writes them back the same", "[routing]") {
  const Provides provides = scale::parse_provides(" gpu=2, mem_gb=64.5 ,site=eu-1");
  REQUIRE(provides == Provides{{"gpu", "2"}, {"mem_gb", "64.5"}, {"site", "eu-1"}});
  REQUIRE(scale::provides_text(provides) == "gpu=2,mem_gb=64.5,site=eu-1");
  REQUIRE(scale::parse_provides(scale::provides_text(provides)) == provides);
  REQUIRE(scale::provided_amount(provides, "gpu") == 2.0);
  REQUIRE(scale::provided_amount(provides, "mem_gb") == 64.5);
  REQUIRE_FALSE(scale::provided_amount(provides, "site").has_value());
  REQUIRE_FALSE(scale::provided_amount(provides, "tpu").has_value());
  REQUIRE(scale::parse_provides("").empty());
  REQUIRE(scale::parse_provides("  ").empty());
  REQUIRE(scale::parse_provides("gpu=0") == Provides{{"gpu", "0"}});
}

TEST_CASE("parse_provides names the entry it refuses", "[routing]") {
  auto refusal = [](const std::string& text) {
    try {
      scale::parse_provides(text);
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  REQUIRE_THAT(refusal("gpu=1,cpu"), Catch::Contains("'cpu'") && Catch::Contains("no '='"));
  REQUIRE_THAT(refusal("=3"), Catch::Contains("'=3'") && Catch::Contains("empty name"));
  REQUIRE_THAT(refusal("gpu=-1"), Catch::Contains("'gpu=-1'") && Catch::Contains("negative or non-finite"));
  REQUIRE_THAT(refusal("gpu=inf"), Catch::Contains("'gpu=inf'"));
  REQUIRE_THAT(refusal("gpu=nan"), Catch::Contains("'gpu=nan'"));
  REQUIRE_THAT(refusal("gpu=1,gpu=2"), Catch::Contains("second time"));
  REQUIRE_THAT(refusal("gpu=1,,site=a"), Catch::Contains("''"));
}

TEST_CASE("a requirement is met by labels equal and amounts at most those provided", "[routing]") {
  const Provides gpu_box{{"gpu", "2"}, {"site", "eu-1"}};
  REQUIRE(Requirement{}.met_by({}));
  REQUIRE(Requirement{.resources = {{"gpu", 2}}}.met_by(gpu_box));
  REQUIRE_FALSE(Requirement{.resources = {{"gpu", 3}}}.met_by(gpu_box));
  REQUIRE_FALSE(Requirement{.resources = {{"gpu", 1}}}.met_by({}));
  REQUIRE_FALSE(Requirement{.resources = {{"site", 1}}}.met_by(gpu_box));  // a label where an amount is asked
  REQUIRE(Requirement{.labels = {{"site", "eu-1"}}}.met_by(gpu_box));
  REQUIRE_FALSE(Requirement{.labels = {{"site", "us-1"}}}.met_by(gpu_box));
  REQUIRE_FALSE(Requirement{.labels = {{"gpu", "2.0"}}}.met_by(gpu_box));  // labels compare as text
  REQUIRE(Requirement{.resources = {{"gpu", 1}}, .labels = {{"site", "eu-1"}}}.text() == "gpu=1,site=eu-1");
  REQUIRE(Requirement{}.text().empty());
}

TEST_CASE("a requirement refuses amounts a chunk cannot hold, and the unsatisfiable message says who offers what",
          "[routing]") {
  auto refused = [](const Requirement& requirement) {
    try {
      requirement.validate();
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  REQUIRE_FALSE(refused(Requirement{.resources = {{"gpu", 0.5}}}));
  REQUIRE(refused(Requirement{.resources = {{"gpu", 0}}}));
  REQUIRE(refused(Requirement{.resources = {{"gpu", -1}}}));
  REQUIRE(refused(Requirement{.resources = {{"gpu", std::numeric_limits<double>::infinity()}}}));
  REQUIRE(refused(Requirement{.resources = {{"", 1}}}));
  REQUIRE(refused(Requirement{.labels = {{"", "x"}}}));
  const std::string message =
      scale::detail::unsatisfiable_message(Requirement{.resources = {{"gpu", 1}}}, {{"w1", {{"cpu", "4"}}}, {"w2", {}}});
  REQUIRE_THAT(message, Catch::Contains("{gpu=1}") && Catch::Contains("w1 {cpu=4}") && Catch::Contains("w2 {}"));
  REQUIRE_THAT(scale::detail::unsatisfiable_message(Requirement{.labels = {{"site", "x"}}}, {}),
               Catch::Contains("no worker has been seen"));
}
