#include "log.h"

#include "error.h"

#include "ggml.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>

namespace nemotron {

namespace {

struct sink {
    nemotron_log_callback callback = nullptr; // null: warnings and errors to stderr
    void *                user_data = nullptr;
};

std::mutex g_sink_mutex;
sink       g_sink;

// The ggml logger the router stands in front of.
std::mutex        g_router_mutex;
ggml_log_callback g_previous = nullptr;
void *            g_previous_data = nullptr;

thread_local int                g_depth = 0;     // engine calls running on this thread
thread_local std::string        g_partial;       // a ggml line not yet ended
thread_local nemotron_log_level g_partial_level = NEMOTRON_LOG_INFO;

void emit(nemotron_log_level level, const std::string & line) {
    sink s;
    {
        std::lock_guard<std::mutex> lock(g_sink_mutex);
        s = g_sink;
    }
    if (s.callback != nullptr) {
        s.callback(level, line.c_str(), s.user_data);
    } else if (level >= NEMOTRON_LOG_WARN) {
        std::fprintf(stderr, "nemotron-asr: %s\n", line.c_str());
    }
}

// Emits the complete lines of g_partial, keeping an unfinished one.
void emit_lines() {
    size_t start = 0, end;
    while ((end = g_partial.find('\n', start)) != std::string::npos) {
        if (end > start) emit(g_partial_level, g_partial.substr(start, end - start));
        start = end + 1;
    }
    g_partial.erase(0, start);
}

void route(ggml_log_level level, const char * text, void * /*user_data*/) {
    if (g_depth == 0) {
        ggml_log_callback previous;
        void * data;
        {
            std::lock_guard<std::mutex> lock(g_router_mutex);
            previous = g_previous;
            data = g_previous_data;
        }
        if (previous != nullptr) previous(level, text, data);
        return;
    }
    if (level != GGML_LOG_LEVEL_CONT) {
        // A new message ends an unfinished one.
        if (!g_partial.empty()) g_partial += '\n';
        emit_lines();
        g_partial_level = level == GGML_LOG_LEVEL_DEBUG ? NEMOTRON_LOG_DEBUG
                        : level == GGML_LOG_LEVEL_WARN  ? NEMOTRON_LOG_WARN
                        : level == GGML_LOG_LEVEL_ERROR ? NEMOTRON_LOG_ERROR
                                                        : NEMOTRON_LOG_INFO;
    }
    g_partial += text;
    emit_lines();
}

} // namespace

void log(nemotron_log_level level, const char * fmt, ...) {
    va_list args;
    va_start(args, fmt);
    const std::string text = vformat(fmt, args);
    va_end(args);
    emit(level, text);
}

log_scope::log_scope() {
    if (g_depth++ > 0) return;
    // Whoever set ggml's logger since the last call (or before the first) keeps receiving
    // everything ggml says outside the engine's calls.
    std::lock_guard<std::mutex> lock(g_router_mutex);
    ggml_log_callback current;
    void * data;
    ggml_log_get(&current, &data);
    if (current != route) {
        g_previous = current;
        g_previous_data = data;
        ggml_log_set(route, nullptr);
    }
}

log_scope::~log_scope() {
    if (--g_depth == 0 && !g_partial.empty()) {
        g_partial += '\n';
        emit_lines();
    }
}

} // namespace nemotron

extern "C" void nemotron_log_set(nemotron_log_callback callback, void * user_data) {
    std::lock_guard<std::mutex> lock(nemotron::g_sink_mutex);
    nemotron::g_sink = {callback, user_data};
}
