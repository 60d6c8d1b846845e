// scale-store: the HTTP store server (scale::StoreServer) as a program. Flags, signals, logs;
// everything else is in src/store/store_server.cpp. `scale-store --help` lists the flags.

#include <csignal>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <scale/store_server.hpp>
#include <scale/version.hpp>

int main(int argc, char** argv) {
  auto log = spdlog::stderr_color_mt("scale-store");
  scale::StoreServerOptions options;
  options.port = 12345;

  CLI::App app{"scale-store " SCALE_VERSION_STRING
               ": the HTTP store behind SharedMemory(\"http://...\") and SharedEventEmitter(\"http://...\")"};
  app.add_option("--host", options.host, "Address to listen on; anything but loopback needs --token")
      ->capture_default_str();
  // NOTE: read as an int and range-checked: CLI11 reads 70000 into a uint16_t as a failed
  // conversion and says "At Most 1 required but received 2".
  int port = options.port;
  app.add_option("--port", port, "Port to listen on, 0 to 65535 (0: any free port, printed at start)")
      ->check(CLI::Range(0, 65535).description("").name("PORT"))
      ->capture_default_str();
  app.add_option("--token", options.token,
                 "Require 'Authorization: Bearer TOKEN' on every request (SSE also accepts ?token=TOKEN)");
  app.add_option("--max-body", options.max_body, "Largest request body in bytes (413 beyond)")->capture_default_str();
  app.add_option("--max-connections", options.max_connections, "Connections served at once, at least 1 (503 beyond)")
      ->check(CLI::Validator(
          [](const std::string& text) {
            const bool positive = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos &&
                                  text.find_first_not_of('0') != std::string::npos;
            return positive ? std::string() : "must be a number of connections, at least 1, not " + text;
          },
          "", "at least 1"))
      ->capture_default_str();
  app.add_option("--cors-origin", options.cors_origin, "Let a web page from this origin use the API (CORS)");
  app.add_option("--allowed-host", options.allowed_hosts,
                 "Also accept this name in the Host header (repeatable); by default only the address listened on, "
                 "loopback addresses and localhost are (421 otherwise: it stops DNS rebinding)")
      ->type_name("NAME");
  app.add_option("--history", options.history, "Changes kept for watches that start in the past")
      ->capture_default_str();
  app.add_option("--history-bytes", options.history_bytes,
                 "Bytes of keys and values those changes may hold; older ones are dropped first")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--io-threads", options.io_threads, "Threads serving connections (each with its own event loop)")
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  app.add_option("--data-dir", options.data_dir,
                 "Keep the store durable in DIR (created if missing): an append-only log and snapshots, "
                 "replayed at start; without it the store lives in memory only (docs/durability.md)")
      ->type_name("DIR");
  const std::map<std::string, scale::FsyncPolicy> fsync_policies{{"always", scale::FsyncPolicy::always},
                                                                 {"everysec", scale::FsyncPolicy::everysec},
                                                                 {"no", scale::FsyncPolicy::no}};
  std::string fsync = "always";
  app.add_option("--fsync", fsync,
                 "With --data-dir: 'always' acknowledges a write once it is fsync'd (concurrent writes share "
                 "one fsync); 'everysec' once written, fsync once a second (an OS crash may lose the last "
                 "second, a killed process nothing); 'no' once written, never fsync")
      ->check(CLI::IsMember(fsync_policies))
      ->capture_default_str();
  app.add_option("--compact-min-bytes", options.compact_min_bytes,
                 "With --data-dir: compact the log into a snapshot once it is larger than this and than twice "
                 "the last snapshot")
      ->capture_default_str();
  app.add_option("--max-queued-bytes", options.max_queued_bytes,
                 "What all SSE subscribers may have queued in all, in bytes (1 MiB to 1 TiB); past it the "
                 "subscribers with the most queued are disconnected first")
      ->check(CLI::Range(std::size_t{1} << 20, std::size_t{1} << 40))
      ->capture_default_str();
  app.add_flag("--ui,!--no-ui", options.ui,
               "Serve the dashboard at /ui/ (the page and scale.js, compiled in; no token needed for them, "
               "every /v1/ call of the page still sends it); --no-ui answers /ui with 404")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  options.fsync = fsync_policies.at(fsync);
  options.port = static_cast<std::uint16_t>(port);

  // Block the stop signals before the server's threads exist, so they inherit the mask and only
  // sigwait below sees SIGINT/SIGTERM.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Constructing the server recovers the data directory, so its errors are reported here too.
  std::unique_ptr<scale::StoreServer> server;
  try {
    server = std::make_unique<scale::StoreServer>(options);
    server->start();
  } catch (const std::exception& error) {
    log->error("{}", error.what());
    return 1;
  }
  log->info("listening on http://{}:{}{}", options.host, server->port(),
            options.token.empty() ? "" : " (token required)");
  if (options.ui) log->info("dashboard at http://{}:{}/ui/", options.host, server->port());
  if (!options.data_dir.empty()) log->info("data directory {} (--fsync {})", options.data_dir, fsync);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  log->info("{}: stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
  server->stop();  // with --data-dir, also writes and fsyncs what the log still holds
  log->info("stopped");
  return 0;
}
