#pragma once
// The message of a caught exception, for the places that report an error as text rather than
// rethrow it: a manager's report answering an order, the cluster manager's log of a failed command.

#include <exception>
#include <string>

namespace scale::detail {

/// what() of the exception `error` holds; "an unknown error" for one not derived from
/// std::exception. `error` must not be null.
std::string exception_message(const std::exception_ptr& error);

}  // namespace scale::detail
