#pragma once
/// \file Errors: every failure the library reports derives from scale::Error.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <scale/crash_report.hpp>

namespace scale {

/// The root of every error the library throws (apart from std::logic_error for misuse).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The Runtime was destroyed (or is shutting down) before the operation finished.
class Stopped : public Error {
 public:
  Stopped()
      : Error("scale::Stopped: the scale::Runtime was destroyed before this operation finished; "
              "keep the Runtime alive until every Future you wait on has completed") {}
};

/// A Promise was destroyed without a value or an error.
class BrokenPromise : public Error {
 public:
  BrokenPromise() : Error("scale::BrokenPromise: the producer of this Future went away without completing it") {}
};

/// A key that is not in the SharedMemory.
class KeyNotFound : public Error {
 public:
  explicit KeyNotFound(std::string key)
      : Error("scale::KeyNotFound: key '" + key + "' is not set; set it first, or use entry(key) to test for presence"),
        m_key(std::move(key)) {}
  /// The key that was asked for.
  const std::string& key() const noexcept { return m_key; }

 private:
  std::string m_key;
};

/// A stored value that cannot be read as the requested type.
class TypeMismatch : public Error {
 public:
  TypeMismatch(std::string key, std::string stored, std::string requested)
      : Error("scale::TypeMismatch: key '" + key + "' holds " + stored + ", which cannot be read as " + requested +
              " without loss; read it as the stored type or store the type you read"),
        m_key(std::move(key)),
        m_stored(std::move(stored)),
        m_requested(std::move(requested)) {}
  const std::string& key() const noexcept { return m_key; }
  /// What the key holds, e.g. "a string" or "an integer (300)".
  const std::string& stored() const noexcept { return m_stored; }
  /// The type it was read as, e.g. "int".
  const std::string& requested() const noexcept { return m_requested; }

 private:
  std::string m_key;
  std::string m_stored;
  std::string m_requested;
};

/// A watch asked for changes older than the history the backend keeps.
class Compacted : public Error {
 public:
  Compacted(std::int64_t requested, std::int64_t oldest_kept)
      : Error("scale::Compacted: watch from revision " + std::to_string(requested) +
              " is older than the oldest kept change (revision " + std::to_string(oldest_kept) +
              "); read the current state with list() and watch from its revision + 1"),
        m_requested(requested),
        m_oldest(oldest_kept) {}
  std::int64_t requested() const noexcept { return m_requested; }
  std::int64_t oldest_kept() const noexcept { return m_oldest; }

 private:
  std::int64_t m_requested;
  std::int64_t m_oldest;
};

/// An exception thrown by a worker function in another process, with its original type and message.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message)
      : Error("scale::RemoteError: " + type_name + ": " + message),
        m_type(std::move(type_name)),
        m_message(std::move(message)) {}
  const std::string& type_name() const noexcept { return m_type; }
  const std::string& message() const noexcept { return m_message; }

 private:
  std::string m_type;
  std::string m_message;
};

/// A worker died while running an item, more often than the retry limit allows.
class WorkerLost : public Error {
 public:
  WorkerLost(std::size_t index, std::string status, int attempts, std::optional<CrashReport> capsule = std::nullopt)
      : Error("scale::WorkerLost: item " + std::to_string(index) + " was running when its worker died (" + status +
              ") on each of " + std::to_string(attempts) + " attempts; the item itself probably crashes the worker" +
              capsule_summary(capsule)),
        m_index(index),
        m_status(std::move(status)),
        m_attempts(attempts),
        m_capsule(std::move(capsule)) {}
  std::size_t index() const noexcept { return m_index; }
  const std::string& status() const noexcept { return m_status; }
  int attempts() const noexcept { return m_attempts; }
  /// What the crashing process recorded when it died of a signal while running the item (its
  /// value, the signal, the stack); empty when the loss had none (a timeout, a lost heartbeat, a
  /// plain --scale-worker process).
  const std::optional<CrashReport>& capsule() const noexcept { return m_capsule; }

 private:
  static std::string capsule_summary(const std::optional<CrashReport>& capsule) {
    if (!capsule) return {};
    std::string text = "; " + capsule->signal_name + " in item " + std::to_string(capsule->item_index) + " = " +
                       capsule->item + " (pid " + std::to_string(capsule->pid) + " on " + capsule->host + ")";
    for (const std::string& frame : capsule->stack) text += "\n    " + frame;
    return text;
  }

  std::size_t m_index;
  std::string m_status;
  int m_attempts;
  std::optional<CrashReport> m_capsule;
};

/// A backend (store server, Redis, worker link) could not be reached.
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// The errors below carry a message written where they arise, which says what to change.

/// A function or value that cannot be sent to another process (a lambda with captures, a function
/// pointer, a value type without to_json/from_json), given to a process or cluster manager.
class NotShippable : public Error {
 public:
  explicit NotShippable(const std::string& message) : Error(message) {}
};

/// Only workers of another build of the program are present: they are refused, never fed tasks
/// they would run wrongly.
class BuildMismatch : public Error {
 public:
  explicit BuildMismatch(const std::string& message) : Error(message) {}
};

/// No worker joined within ClusterOptions::wait_for_workers.
class NoWorkers : public Error {
 public:
  explicit NoWorkers(const std::string& message) : Error(message) {}
};

/// No worker can ever meet a call's requirements (its resources or labels).
class Unsatisfiable : public Error {
 public:
  explicit Unsatisfiable(const std::string& message) : Error(message) {}
};

/// A call stopped through its stop token before it finished.
class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& message) : Error(message) {}
};

/// A write applied in memory that its journal could not make durable (a failed write or fsync of
/// scale-store's log, or a log already closed). The store server answers it with 500.
class JournalError : public Error {
 public:
  explicit JournalError(const std::string& message) : Error(message) {}
};

}  // namespace scale
