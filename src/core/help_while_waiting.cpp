#include "core/help_while_waiting.hpp"

namespace scale::detail {

namespace {
thread_local ChunkFrame* t_innermost = nullptr;
}

ChunkFrame::ChunkFrame(const Job& job) noexcept : m_job(job), m_outer(t_innermost) { t_innermost = this; }
ChunkFrame::~ChunkFrame() { t_innermost = m_outer; }

std::shared_ptr<const NestingFrame> current_nesting_frame() {
  ChunkFrame* frame = t_innermost;
  if (frame == nullptr) return nullptr;
  // Only this thread touches its frames; other threads see the record through the Jobs made in
  // it, which reach them through the loop and the pool's queue (both under a mutex).
  if (!frame->m_record) frame->m_record = std::make_shared<const NestingFrame>(NestingFrame{frame->m_job.made_in()});
  return frame->m_record;
}

const NestingFrame* innermost_nesting_frame() noexcept {
  return t_innermost != nullptr ? t_innermost->m_record.get() : nullptr;
}

}  // namespace scale::detail
