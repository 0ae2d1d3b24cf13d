// Errors inside the engine are C++ exceptions carrying a status; the C API turns them into
// a status code and a thread-local message, so none crosses the public boundary.
#pragma once

#include "nemotron-asr.h"

#include <cstdarg>
#include <stdexcept>
#include <string>

namespace nemotron {

class error : public std::runtime_error {
public:
    error(nemotron_status status, const std::string & message) : std::runtime_error(message), status_(status) {}
    nemotron_status status() const { return status_; }

private:
    nemotron_status status_;
};

std::string format(const char * fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vformat(const char * fmt, va_list args);

[[noreturn]] void fail(nemotron_status status, const char * fmt, ...) __attribute__((format(printf, 2, 3)));

} // namespace nemotron
