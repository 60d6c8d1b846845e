#pragma once
// Embedded store servers for the http:// tests: the server has no namespaces, so each store the
// suites ask for gets a fresh scale::StoreServer on a loopback ephemeral port (they are cheap).
// They live until the test executable exits, so no client outlives its server.

#include <scale/store_server.hpp>

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

namespace support {

/// A started StoreServer with `options` (port 0 unless set), kept until exit; returns its URL.
inline std::string fresh_store_url(scale::StoreServerOptions options = {}) {
  static std::mutex mutex;
  static std::deque<std::unique_ptr<scale::StoreServer>> servers;
  options.io_threads = 1;
  auto server = std::make_unique<scale::StoreServer>(options);
  server->start();
  std::string url = "http://127.0.0.1:" + std::to_string(server->port());
  std::lock_guard lock(mutex);
  servers.push_back(std::move(server));
  return url;
}

}  // namespace support
