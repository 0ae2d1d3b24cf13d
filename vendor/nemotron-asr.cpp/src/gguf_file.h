// A GGUF reader over a memory-mapped file. It is our own rather than ggml's gguf.h because
// every field of an untrusted file must be checked before ggml sees it (ggml asserts kill
// the process), and because the messages must say where a file is broken.
#pragma once

#include "ggml.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace nemotron {

// A read-only mapping of a whole file.
class mapped_file {
public:
    explicit mapped_file(const std::string & path);
    ~mapped_file();
    mapped_file(const mapped_file &) = delete;
    mapped_file & operator=(const mapped_file &) = delete;

    const uint8_t * data() const { return data_; }
    size_t size() const { return size_; }
    const std::string & path() const { return path_; }

    // Drops the process's pages of a range (they are re-read if touched again), so copying
    // the weights out of the mapping does not hold them twice.
    void release(size_t offset, size_t length) const;

private:
    std::string path_;
    uint8_t *   data_ = nullptr;
    size_t      size_ = 0;
};

enum class gguf_type : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

const char * gguf_type_name(gguf_type type);

struct gguf_value {
    gguf_type       type      = gguf_type::UINT8;
    gguf_type       elem_type = gguf_type::UINT8; // arrays only
    uint64_t        n         = 0;                // array length, or string length in bytes
    const uint8_t * data      = nullptr;          // first byte of the payload in the mapping
};

struct gguf_tensor {
    std::string name;
    uint32_t    n_dims = 0;
    int64_t     ne[4]  = {1, 1, 1, 1};
    ggml_type   type   = GGML_TYPE_F32;
    uint64_t    offset = 0; // from the start of the data section
    uint64_t    n_bytes = 0;
};

class gguf_file {
public:
    // Parses and checks the header, metadata and tensor table of a mapped file. Tensor
    // types, shapes, offsets and sizes are all checked against the file.
    explicit gguf_file(const mapped_file & file);

    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }
    const std::vector<gguf_tensor> & tensors() const { return tensors_; }

    bool has(const std::string & key) const { return kv_index_.count(key) != 0; }
    const gguf_tensor * find_tensor(const std::string & name) const;

    // Typed getters. They return false when the key is absent and fail with a message
    // naming the key when it holds a value of another type or out of range. Integer
    // getters accept any integer type whose value fits.
    bool get_int(const std::string & key, int64_t min, int64_t max, int64_t & out) const;
    bool get_float(const std::string & key, float & out) const;
    bool get_bool(const std::string & key, bool & out) const;
    bool get_string(const std::string & key, std::string & out) const;
    bool get_string_array(const std::string & key, std::vector<std::string> & out) const;
    bool get_int_array(const std::string & key, int64_t min, int64_t max, std::vector<int64_t> & out) const;

private:
    const gguf_value * find(const std::string & key) const;

    const mapped_file & file_;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, gguf_value>> kv_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::vector<gguf_tensor> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

} // namespace nemotron
