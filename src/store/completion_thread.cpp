#include "store/completion_thread.hpp"

namespace scale::detail {
namespace {
thread_local CompletionThread* current_thread = nullptr;
}  // namespace

CompletionThread* CompletionThread::current() noexcept { return current_thread; }

void CompletionThread::set_current(CompletionThread* thread) noexcept { current_thread = thread; }

}  // namespace scale::detail
