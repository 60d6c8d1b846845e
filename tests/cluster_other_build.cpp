// A program of another build, for tests/cluster_test.cpp: started with --scale-worker URL it
// joins as a worker whose build fingerprint differs from the test's (another executable, other
// registered tasks), so a ClusterManager in the test must refuse it.
#include <scale/scale.hpp>

#include <cstdio>

auto other_build_square = [](int x) { return x * x; };

int main(int argc, char** argv) {
  scale::Runtime runtime(argc, argv);  // with --scale-worker: serves and never returns
  scale::InlineManager manager;
  scale::Iterator<int> numbers({1, 2, 3}, manager);
  std::vector<int> squares = numbers.map(other_build_square).get();
  std::printf("%d %d %d\n", squares[0], squares[1], squares[2]);
  return 0;
}
