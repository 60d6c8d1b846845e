// ResourceLedger: what a worker provides and what its running chunks hold of it.

#include <catch2/catch.hpp>

#include "core/resource_ledger.hpp"

#include <cstddef>
#include <stdexcept>
#include <string>

using scale::Provides;
using scale::detail::Requirement;
using scale::detail::ResourceLedger;
using scale::detail::Resources;

TEST_CASE("a ledger lets chunks take amounts up to what it provides and no more", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "2"}, {"mem_gb", "64"}, {"site", "eu-1"}});
  const Resources one{{"gpu", 1}};
  REQUIRE(ledger.fits(one));
  REQUIRE(ledger.take(one));
  REQUIRE(ledger.take(one));
  REQUIRE(ledger.held("gpu") == 2);
  REQUIRE(ledger.holders("gpu") == 2);
  REQUIRE_FALSE(ledger.fits(one));
  REQUIRE_FALSE(ledger.take(one));
  REQUIRE(ledger.holders("gpu") == 2);  // a refused take holds nothing
  // Another amount is untouched.
  REQUIRE(ledger.take(Resources{{"mem_gb", 64}}));
  REQUIRE_FALSE(ledger.take(Resources{{"mem_gb", 1}}));
  ledger.release(one);
  REQUIRE(ledger.held("gpu") == 1);
  REQUIRE(ledger.take(one));
  ledger.release(one);
  ledger.release(one);
  REQUIRE(ledger.held("gpu") == 0);
  REQUIRE(ledger.holders("gpu") == 0);
}

TEST_CASE("a ledger takes a chunk's amounts all together or not at all", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "1"}, {"mem_gb", "8"}});
  const Resources both{{"gpu", 1}, {"mem_gb", 4}};
  REQUIRE(ledger.take(both));
  REQUIRE_FALSE(ledger.take(both));  // gpu is taken, mem_gb would fit
  REQUIRE(ledger.held("mem_gb") == 4);
  REQUIRE(ledger.take(Resources{{"mem_gb", 4}}));
  ledger.release(both);
  REQUIRE(ledger.held("gpu") == 0);
  REQUIRE(ledger.held("mem_gb") == 4);
}

TEST_CASE("a ledger has no room for a name it does not provide or one that is a label", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "1"}, {"site", "eu-1"}});
  REQUIRE_FALSE(ledger.fits(Resources{{"tpu", 1}}));
  REQUIRE_FALSE(ledger.fits(Resources{{"site", 1}}));
  REQUIRE(ledger.fits(Resources{}));
  REQUIRE(ledger.take(Resources{}));
  // Giving back what was never taken changes nothing.
  ledger.release(Resources{{"tpu", 1}});
  ledger.release(Resources{{"gpu", 1}});
  REQUIRE(ledger.held("gpu") == 0);
  REQUIRE(ledger.take(Resources{{"gpu", 1}}));
}

TEST_CASE("a ledger's fractions add up without drift", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "0.3"}});
  const Resources tenth{{"gpu", 0.1}};
  // 0.1 + 0.1 + 0.1 is a little above 0.3 in doubles: all three still fit, a fourth does not.
  REQUIRE(ledger.take(tenth));
  REQUIRE(ledger.take(tenth));
  REQUIRE(ledger.take(tenth));
  REQUIRE_FALSE(ledger.take(tenth));
  for (int i = 0; i < 3; ++i) ledger.release(tenth);
  REQUIRE(ledger.held("gpu") == 0);  // exactly: the last holder gone, nothing is left over
  for (int round = 0; round < 1000; ++round) {
    REQUIRE(ledger.take(tenth));
    REQUIRE(ledger.take(tenth));
    ledger.release(tenth);
    ledger.release(tenth);
  }
  REQUIRE(ledger.room_for(tenth, 10) == 3);
}

TEST_CASE("room_for counts the chunks that fit now, at most the limit", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "4"}, {"mem_gb", "10"}});
  REQUIRE(ledger.room_for(Resources{{"gpu", 1}}, 100) == 4);
  REQUIRE(ledger.room_for(Resources{{"gpu", 1}}, 3) == 3);
  REQUIRE(ledger.room_for(Resources{{"gpu", 1}, {"mem_gb", 5}}, 100) == 2);
  REQUIRE(ledger.room_for(Resources{{"gpu", 3}}, 100) == 1);
  REQUIRE(ledger.room_for(Resources{{"tpu", 1}}, 100) == 0);
  REQUIRE(ledger.room_for(Resources{}, 7) == 7);
  REQUIRE(ledger.take(Resources{{"gpu", 3}}));
  REQUIRE(ledger.room_for(Resources{{"gpu", 1}}, 100) == 1);
  REQUIRE(ledger.room_for(Resources{{"gpu", 2}}, 100) == 0);
}

TEST_CASE("can_meet says whether a requirement could ever run, whatever is held", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "2"}, {"site", "eu-1"}});
  REQUIRE(ledger.take(Resources{{"gpu", 2}}));
  REQUIRE(ledger.can_meet(Requirement{{{"gpu", 2}}, {{"site", "eu-1"}}}));
  REQUIRE_FALSE(ledger.can_meet(Requirement{{{"gpu", 3}}, {}}));
  REQUIRE_FALSE(ledger.can_meet(Requirement{{}, {{"site", "us-1"}}}));
  REQUIRE(ledger.can_meet(Requirement{}));
}

TEST_CASE("what a ledger provides may change while chunks hold part of it", "[routing][resource_ledger]") {
  ResourceLedger ledger(Provides{{"gpu", "2"}});
  const Resources one{{"gpu", 1}};
  REQUIRE(ledger.take(one));
  REQUIRE(ledger.take(one));
  ledger.set_provides(Provides{{"gpu", "1"}});
  REQUIRE(ledger.held("gpu") == 2);  // holders keep what they took
  ledger.release(one);
  REQUIRE_FALSE(ledger.take(one));  // 1 held of 1 offered
  ledger.release(one);
  REQUIRE(ledger.take(one));
  // An amount no longer offered: its holder gives it back, and nothing new fits.
  ledger.set_provides(Provides{{"site", "eu-1"}});
  REQUIRE(ledger.holders("gpu") == 1);
  ledger.release(one);
  REQUIRE(ledger.holders("gpu") == 0);
  REQUIRE_FALSE(ledger.fits(one));
  REQUIRE_FALSE(ledger.can_meet(Requirement{{{"gpu", 1}}, {}}));
  ledger.set_provides(Provides{{"gpu", "3"}});
  REQUIRE(ledger.room_for(one, 10) == 3);
}

TEST_CASE("a ledger refuses provides that parse_provides would refuse, naming its owner and the entry",
          "[routing][resource_ledger]") {
  auto refusal = [](const Provides& provides) {
    try {
      ResourceLedger ledger(provides, "ThreadPoolOptions::provides");
    } catch (const std::invalid_argument& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  REQUIRE_THAT(refusal({{"gpu", "-1"}}), Catch::Contains("ThreadPoolOptions::provides") && Catch::Contains("'gpu=-1'"));
  REQUIRE_THAT(refusal({{"gpu", "nan"}}), Catch::Contains("'gpu=nan'"));
  REQUIRE_THAT(refusal({{"", "1"}}), Catch::Contains("empty name"));
  REQUIRE_THAT(refusal({{"a,b", "1"}}), Catch::Contains("ThreadPoolOptions::provides"));
  REQUIRE_THAT(refusal({{"gpu", " 2"}}), Catch::Contains("spaces"));
  REQUIRE(refusal({{"gpu", "0"}, {"site", "eu-1"}}) == "accepted");
  REQUIRE(refusal({}) == "accepted");
  ResourceLedger ledger;
  REQUIRE_THROWS_AS(ledger.set_provides(Provides{{"gpu", "-2"}}), std::invalid_argument);
}
