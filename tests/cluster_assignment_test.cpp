// assign_idle_workers (src/cluster/assignment.hpp): what the matcher's holder computes from the
// managers' demands, the build's directory and the idle workers, on hand-made clusters; and the
// demand field's encoding. The matching itself is stable_match, property-tested in
// stable_match_test.cpp.
#include <catch2/catch.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "cluster/assignment.hpp"

namespace {

using scale::detail::assign_idle_workers;
using scale::detail::IdleWorker;
using scale::detail::ManagerClasses;
using scale::detail::ManagerDemand;
using scale::detail::Requirement;

ManagerDemand waiting(std::string site, std::size_t queued, double share = 0, std::string class_name = "any") {
  ManagerDemand demand;
  demand.host = "manager-host";
  demand.site = std::move(site);
  demand.queued[class_name] = queued;
  demand.share = share;
  return demand;
}

IdleWorker idle(std::string id, std::string site, scale::Provides provides = {}) {
  return IdleWorker{std::move(id), "host-" + id, std::move(site), std::move(provides)};
}

/// A directory in which every manager keeps the "any" stream.
std::map<std::string, ManagerClasses> any_streams(const std::vector<std::string>& managers) {
  std::map<std::string, ManagerClasses> directory;
  for (const auto& id : managers) directory[id].classes.emplace("any", Requirement{});
  return directory;
}

}  // namespace

TEST_CASE("idle workers are assigned to the waiting manager of their own site", "[cluster][assignment]") {
  const std::map<std::string, ManagerDemand> demands{{"ma", waiting("a", 10)}, {"mb", waiting("b", 10)}};
  const std::vector<IdleWorker> workers{idle("w1", "a"), idle("w2", "b"), idle("w3", "a"), idle("w4", "b")};
  const auto assigned = assign_idle_workers(demands, any_streams({"ma", "mb"}), workers);
  CHECK(assigned == std::map<std::string, std::string>{{"w1", "ma"}, {"w2", "mb"}, {"w3", "ma"}, {"w4", "mb"}});
  // The same input gives the same answer, whatever order the workers come in.
  const std::vector<IdleWorker> reversed(workers.rbegin(), workers.rend());
  CHECK(assign_idle_workers(demands, any_streams({"ma", "mb"}), reversed) == assigned);
}

TEST_CASE("no manager takes more than an even share of the idle workers while another waits, and what one wants "
          "less of goes to the others",
          "[cluster][assignment]") {
  auto count = [](const std::map<std::string, std::string>& assigned, const std::string& manager) {
    std::size_t n = 0;
    for (const auto& [worker, to] : assigned) n += to == manager ? 1 : 0;
    return n;
  };
  // Every worker is on the near manager's site; the far one waits too, so the near one takes two.
  const std::vector<IdleWorker> on_a{idle("w1", "a"), idle("w2", "a"), idle("w3", "a"), idle("w4", "a")};
  const auto capped =
      assign_idle_workers({{"near", waiting("a", 10)}, {"far", waiting("", 10)}}, any_streams({"near", "far"}), on_a);
  CHECK(count(capped, "near") == 2);
  // The far manager's two are no nearer to it than to the near one: they stay unassigned and
  // serve both in turn.
  CHECK(capped.size() == 2);
  // One manager wants a single worker: the other gets the remaining three.
  const std::vector<IdleWorker> mixed{idle("w1", "a"), idle("w2", "a"), idle("w3", "a"), idle("w4", "b")};
  const auto uneven =
      assign_idle_workers({{"ma", waiting("a", 10)}, {"mb", waiting("b", 1)}}, any_streams({"ma", "mb"}), mixed);
  CHECK(count(uneven, "ma") == 3);
  CHECK(uneven.at("w4") == "mb");
}

TEST_CASE("workers equally near every waiting manager get no assignment, so they serve them in turn",
          "[cluster][assignment]") {
  const std::vector<IdleWorker> workers{idle("w1", ""), idle("w2", "a"), idle("w3", "b")};
  CHECK(assign_idle_workers({{"m1", waiting("", 10, 0.9)}, {"m2", waiting("", 10, 0.0)}}, any_streams({"m1", "m2"}),
                            workers)
            .empty());
  CHECK(assign_idle_workers({{"m1", waiting("a", 10)}, {"m2", waiting("a", 10)}}, any_streams({"m1", "m2"}), workers)
            .empty());
}

TEST_CASE("a worker is assigned only to a manager with queued work in a class its provides meet",
          "[cluster][assignment]") {
  std::map<std::string, ManagerClasses> directory = any_streams({"cpu"});
  Requirement gpu;
  gpu.resources = {{"gpu", 1}};
  directory["gpu"].classes.emplace("r-gpu", gpu);
  // The gpu manager sits on every worker's site: only the gpu worker can serve it.
  const std::map<std::string, ManagerDemand> demands{{"cpu", waiting("", 5)}, {"gpu", waiting("a", 5, 0, "r-gpu")}};
  const std::vector<IdleWorker> workers{idle("plain1", "a"), idle("plain2", "a"), idle("with-gpu", "a", {{"gpu", "1"}})};
  const auto assigned = assign_idle_workers(demands, directory, workers);
  CHECK(assigned == std::map<std::string, std::string>{{"with-gpu", "gpu"}});
  // A class the directory does not name (yet) is served by no one.
  const auto unknown = assign_idle_workers({{"cpu", waiting("", 5)}, {"gpu", waiting("", 5, 0, "r-other")}},
                                           directory, workers);
  CHECK(unknown.empty());  // one manager left waiting: nobody to choose between
}

TEST_CASE("with fewer than two managers waiting nothing is assigned", "[cluster][assignment]") {
  const std::vector<IdleWorker> workers{idle("w1", "a")};
  CHECK(assign_idle_workers({{"m1", waiting("a", 3)}}, any_streams({"m1"}), workers).empty());
  CHECK(assign_idle_workers({{"m1", waiting("a", 3)}, {"m2", waiting("a", 0)}}, any_streams({"m1", "m2"}), workers)
            .empty());
  CHECK(assign_idle_workers({{"m1", waiting("a", 3)}, {"m2", waiting("b", 3)}}, any_streams({"m1", "m2"}), {}).empty());
}

TEST_CASE("a manager's demand field decodes as it was encoded, and text that is not one decodes to nothing",
          "[cluster][assignment]") {
  ManagerDemand demand = waiting("eu-1", 7, 0.25);
  demand.queued["r0123456789abcdef"] = 2;
  demand.writes = 42;
  const auto decoded = scale::detail::decode_manager_demand(scale::detail::encode_manager_demand(demand));
  REQUIRE(decoded);
  CHECK(decoded->host == demand.host);
  CHECK(decoded->site == "eu-1");
  CHECK(decoded->queued == demand.queued);
  CHECK(decoded->total() == 9);
  CHECK(decoded->share == 0.25);
  CHECK(decoded->writes == 42);
  CHECK_FALSE(scale::detail::decode_manager_demand("not json"));
  // A share that is negative reads as 0, so the matching never refuses the input.
  CHECK(scale::detail::decode_manager_demand(R"({"share": -1})")->share == 0);
}
