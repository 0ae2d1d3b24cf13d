#include "gguf_file.h"

#include "error.h"

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <limits>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nemotron {

// ---- mapping ----------------------------------------------------------------------------

mapped_file::mapped_file(const std::string & path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        fail(e == ENOENT || e == ENOTDIR ? NEMOTRON_ERR_NOT_FOUND : NEMOTRON_ERR_IO,
             "cannot open '%s': %s", path.c_str(), std::strerror(e));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        fail(NEMOTRON_ERR_IO, "cannot stat '%s': %s", path.c_str(), std::strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        ::close(fd);
        fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' is a directory, not a GGUF model file", path.c_str());
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' is not a regular file", path.c_str());
    }
    if (st.st_size == 0) {
        ::close(fd);
        fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' is empty, not a GGUF model file", path.c_str());
    }
    size_ = size_t(st.st_size);
    void * p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
        fail(NEMOTRON_ERR_IO, "cannot map '%s' (%zu bytes): %s", path.c_str(), size_, std::strerror(e));
    }
    data_ = static_cast<uint8_t *>(p);
}

mapped_file::~mapped_file() {
    if (data_ != nullptr) {
        ::munmap(data_, size_);
    }
}

void mapped_file::release(size_t offset, size_t length) const {
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    const size_t begin = (offset + page - 1) / page * page;
    const size_t end = std::min(size_, offset + length) / page * page;
    if (end > begin) {
        ::madvise(data_ + begin, end - begin, MADV_DONTNEED);
    }
}

// ---- parsing ----------------------------------------------------------------------------

const char * gguf_type_name(gguf_type type) {
    switch (type) {
        case gguf_type::UINT8:   return "UINT8";
        case gguf_type::INT8:    return "INT8";
        case gguf_type::UINT16:  return "UINT16";
        case gguf_type::INT16:   return "INT16";
        case gguf_type::UINT32:  return "UINT32";
        case gguf_type::INT32:   return "INT32";
        case gguf_type::FLOAT32: return "FLOAT32";
        case gguf_type::BOOL:    return "BOOL";
        case gguf_type::STRING:  return "STRING";
        case gguf_type::ARRAY:   return "ARRAY";
        case gguf_type::UINT64:  return "UINT64";
        case gguf_type::INT64:   return "INT64";
        case gguf_type::FLOAT64: return "FLOAT64";
    }
    return "?";
}

static size_t scalar_size(gguf_type type) {
    switch (type) {
        case gguf_type::UINT8: case gguf_type::INT8: case gguf_type::BOOL: return 1;
        case gguf_type::UINT16: case gguf_type::INT16: return 2;
        case gguf_type::UINT32: case gguf_type::INT32: case gguf_type::FLOAT32: return 4;
        case gguf_type::UINT64: case gguf_type::INT64: case gguf_type::FLOAT64: return 8;
        default: return 0;
    }
}

static bool is_known_type(uint32_t t) { return t <= uint32_t(gguf_type::FLOAT64); }

namespace {

// Reads little-endian fields and fails with the place it was reading when the file ends.
class cursor {
public:
    cursor(const mapped_file & f) : f_(f) {}

    size_t pos() const { return pos_; }
    size_t remaining() const { return f_.size() - pos_; }

    const uint8_t * take(uint64_t n, const std::string & what) {
        if (n > remaining()) {
            fail(NEMOTRON_ERR_INVALID_MODEL,
                 "truncated GGUF file: '%s' ends at byte %zu, inside %s (which needs %llu more bytes)",
                 f_.path().c_str(), f_.size(), what.c_str(), (unsigned long long) (n - remaining()));
        }
        const uint8_t * p = f_.data() + pos_;
        pos_ += size_t(n);
        return p;
    }
    uint32_t u32(const std::string & what) { uint32_t v; std::memcpy(&v, take(4, what), 4); return v; }
    uint64_t u64(const std::string & what) { uint64_t v; std::memcpy(&v, take(8, what), 8); return v; }
    std::string str(const std::string & what) {
        const uint64_t n = u64(what);
        const uint8_t * p = take(n, what);
        return std::string(reinterpret_cast<const char *>(p), size_t(n));
    }

private:
    const mapped_file & f_;
    size_t pos_ = 0;
};

} // namespace

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

gguf_file::gguf_file(const mapped_file & file) : file_(file) {
    cursor c(file);
    const char * path = file.path().c_str();

    const uint8_t * magic = c.take(4, "the GGUF magic");
    if (std::memcmp(magic, "GGUF", 4) != 0) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' is not a GGUF file (its first bytes are not \"GGUF\")", path);
    }
    version_ = c.u32("the GGUF version");
    if (version_ != 2 && version_ != 3) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "'%s' has GGUF version %u; only versions 2 and 3 are supported", path, version_);
    }
    const uint64_t n_tensors = c.u64("the tensor count");
    const uint64_t n_kv = c.u64("the metadata count");
    // Every entry takes at least this many bytes, so larger counts cannot fit in the file
    // and are rejected before anything is allocated for them.
    if (n_kv > c.remaining() / 13) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "truncated or corrupt GGUF file '%s': it claims %llu metadata entries, more than fit in its %zu bytes",
             path, (unsigned long long) n_kv, file.size());
    }
    if (n_tensors > c.remaining() / 24) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "truncated or corrupt GGUF file '%s': it claims %llu tensors, more than fit in its %zu bytes",
             path, (unsigned long long) n_tensors, file.size());
    }

    kv_.reserve(size_t(n_kv));
    for (uint64_t i = 0; i < n_kv; ++i) {
        const std::string where = format("metadata entry %llu of %llu", (unsigned long long) i + 1, (unsigned long long) n_kv);
        std::string key = c.str("the key of " + where);
        const std::string what = "the value of metadata key '" + key + "'";
        const uint32_t t = c.u32(what);
        if (!is_known_type(t)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' has an unknown value type %u", key.c_str(), t);
        }
        gguf_value v;
        v.type = gguf_type(t);
        if (v.type == gguf_type::STRING) {
            v.n = c.u64(what);
            v.data = c.take(v.n, what);
        } else if (v.type == gguf_type::ARRAY) {
            const uint32_t et = c.u32(what);
            if (!is_known_type(et) || gguf_type(et) == gguf_type::ARRAY) {
                fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' is an array of an unsupported element type %u", key.c_str(), et);
            }
            v.elem_type = gguf_type(et);
            v.n = c.u64(what);
            v.data = file.data() + c.pos();
            if (v.elem_type == gguf_type::STRING) {
                if (v.n > c.remaining() / 8) {
                    fail(NEMOTRON_ERR_INVALID_MODEL, "truncated or corrupt GGUF file: metadata key '%s' claims %llu strings, more than fit",
                         key.c_str(), (unsigned long long) v.n);
                }
                for (uint64_t j = 0; j < v.n; ++j) {
                    const uint64_t len = c.u64(what);
                    c.take(len, what);
                }
            } else {
                const size_t es = scalar_size(v.elem_type);
                if (v.n > c.remaining() / es) {
                    fail(NEMOTRON_ERR_INVALID_MODEL, "truncated or corrupt GGUF file: metadata key '%s' claims %llu elements, more than fit",
                         key.c_str(), (unsigned long long) v.n);
                }
                c.take(v.n * es, what);
            }
        } else {
            v.n = 1;
            v.data = c.take(scalar_size(v.type), what);
        }
        if (kv_index_.count(key)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' appears twice", key.c_str());
        }
        kv_index_[key] = kv_.size();
        kv_.emplace_back(std::move(key), v);
    }

    int64_t align = 32;
    if (get_int("general.alignment", 1, 1 << 30, align) && (align & (align - 1)) != 0) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "general.alignment = %lld is not a power of two", (long long) align);
    }
    alignment_ = uint64_t(align);

    tensors_.reserve(size_t(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        const std::string where = format("the tensor table (tensor %llu of %llu)", (unsigned long long) i + 1,
                                         (unsigned long long) n_tensors);
        gguf_tensor t;
        t.name = c.str(where);
        t.n_dims = c.u32(where);
        if (t.n_dims < 1 || t.n_dims > 4) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has %u dimensions (1 to 4 are valid)", t.name.c_str(), t.n_dims);
        }
        int64_t n_elems = 1;
        for (uint32_t d = 0; d < t.n_dims; ++d) {
            const uint64_t ne = c.u64(where);
            if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max() / n_elems)) {
                fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has an invalid size %llu in dimension %u", t.name.c_str(),
                     (unsigned long long) ne, d);
            }
            t.ne[d] = int64_t(ne);
            n_elems *= int64_t(ne);
        }
        const uint32_t type = c.u32(where);
        if (type >= GGML_TYPE_COUNT || ggml_blck_size(ggml_type(type)) == 0 || ggml_type_size(ggml_type(type)) == 0) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' has an unknown ggml type %u", t.name.c_str(), type);
        }
        t.type = ggml_type(type);
        const int64_t blck = ggml_blck_size(t.type);
        if (t.ne[0] % blck != 0) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' of type %s has rows of %lld elements, not a multiple of its block size %lld",
                 t.name.c_str(), ggml_type_name(t.type), (long long) t.ne[0], (long long) blck);
        }
        const uint64_t row_bytes = uint64_t(t.ne[0] / blck) * ggml_type_size(t.type);
        const uint64_t n_rows = uint64_t(n_elems / t.ne[0]);
        if (n_rows > 0 && row_bytes > std::numeric_limits<uint64_t>::max() / n_rows) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' is too large", t.name.c_str());
        }
        t.n_bytes = row_bytes * n_rows;
        t.offset = c.u64(where);
        if (t.offset % alignment_ != 0) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' starts at data offset %llu, not a multiple of the alignment %llu",
                 t.name.c_str(), (unsigned long long) t.offset, (unsigned long long) alignment_);
        }
        if (tensor_index_.count(t.name)) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "tensor '%s' appears twice", t.name.c_str());
        }
        tensor_index_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }

    data_offset_ = align_up(c.pos(), alignment_);
    for (const gguf_tensor & t : tensors_) {
        const uint64_t end = data_offset_ + t.offset + t.n_bytes;
        if (t.offset > file.size() || end > file.size() || end < t.offset) {
            fail(NEMOTRON_ERR_INVALID_MODEL,
                 "truncated GGUF file: the data of tensor '%s' (%llu bytes at byte %llu) lies past the end of '%s' (%zu bytes)",
                 t.name.c_str(), (unsigned long long) t.n_bytes, (unsigned long long) (data_offset_ + t.offset), path,
                 file.size());
        }
    }
}

const gguf_value * gguf_file::find(const std::string & key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const gguf_tensor * gguf_file::find_tensor(const std::string & name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

static bool is_integer(gguf_type t) {
    return t == gguf_type::UINT8 || t == gguf_type::INT8 || t == gguf_type::UINT16 || t == gguf_type::INT16 ||
           t == gguf_type::UINT32 || t == gguf_type::INT32 || t == gguf_type::UINT64 || t == gguf_type::INT64;
}

// Reads one integer of type t; false if an unsigned 64-bit value does not fit int64.
static bool read_integer(gguf_type t, const uint8_t * p, int64_t & out) {
    switch (t) {
        case gguf_type::UINT8:  { uint8_t v;  std::memcpy(&v, p, 1); out = v; return true; }
        case gguf_type::INT8:   { int8_t v;   std::memcpy(&v, p, 1); out = v; return true; }
        case gguf_type::UINT16: { uint16_t v; std::memcpy(&v, p, 2); out = v; return true; }
        case gguf_type::INT16:  { int16_t v;  std::memcpy(&v, p, 2); out = v; return true; }
        case gguf_type::UINT32: { uint32_t v; std::memcpy(&v, p, 4); out = v; return true; }
        case gguf_type::INT32:  { int32_t v;  std::memcpy(&v, p, 4); out = v; return true; }
        case gguf_type::INT64:  { int64_t v;  std::memcpy(&v, p, 8); out = v; return true; }
        case gguf_type::UINT64: {
            uint64_t v;
            std::memcpy(&v, p, 8);
            if (v > uint64_t(std::numeric_limits<int64_t>::max())) return false;
            out = int64_t(v);
            return true;
        }
        default: return false;
    }
}

[[noreturn]] static void wrong_type(const std::string & key, const gguf_value & v, const char * expected) {
    std::string got = gguf_type_name(v.type);
    if (v.type == gguf_type::ARRAY) {
        got += std::string(" of ") + gguf_type_name(v.elem_type);
    }
    fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' holds a %s, expected %s", key.c_str(), got.c_str(), expected);
}

bool gguf_file::get_int(const std::string & key, int64_t min, int64_t max, int64_t & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    int64_t x = 0;
    if (!is_integer(v->type)) wrong_type(key, *v, "an integer");
    if (!read_integer(v->type, v->data, x) || x < min || x > max) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' = %lld is out of range [%lld, %lld]", key.c_str(),
             (long long) x, (long long) min, (long long) max);
    }
    out = x;
    return true;
}

bool gguf_file::get_float(const std::string & key, float & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    if (v->type == gguf_type::FLOAT32) {
        std::memcpy(&out, v->data, 4);
    } else if (v->type == gguf_type::FLOAT64) {
        double d;
        std::memcpy(&d, v->data, 8);
        out = float(d);
    } else {
        wrong_type(key, *v, "a FLOAT32");
    }
    if (!(out == out) || out > std::numeric_limits<float>::max() || out < -std::numeric_limits<float>::max()) {
        fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' is not a finite number", key.c_str());
    }
    return true;
}

bool gguf_file::get_bool(const std::string & key, bool & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    if (v->type != gguf_type::BOOL) wrong_type(key, *v, "a BOOL");
    out = v->data[0] != 0;
    return true;
}

bool gguf_file::get_string(const std::string & key, std::string & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    if (v->type != gguf_type::STRING) wrong_type(key, *v, "a STRING");
    out.assign(reinterpret_cast<const char *>(v->data), size_t(v->n));
    return true;
}

bool gguf_file::get_string_array(const std::string & key, std::vector<std::string> & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    if (v->type != gguf_type::ARRAY || v->elem_type != gguf_type::STRING) wrong_type(key, *v, "an ARRAY of STRING");
    out.clear();
    out.reserve(size_t(v->n));
    const uint8_t * p = v->data; // lengths and bounds were checked while parsing
    for (uint64_t i = 0; i < v->n; ++i) {
        uint64_t len;
        std::memcpy(&len, p, 8);
        out.emplace_back(reinterpret_cast<const char *>(p + 8), size_t(len));
        p += 8 + len;
    }
    return true;
}

bool gguf_file::get_int_array(const std::string & key, int64_t min, int64_t max, std::vector<int64_t> & out) const {
    const gguf_value * v = find(key);
    if (v == nullptr) return false;
    if (v->type != gguf_type::ARRAY || !is_integer(v->elem_type)) wrong_type(key, *v, "an ARRAY of integers");
    out.clear();
    const size_t es = scalar_size(v->elem_type);
    for (uint64_t i = 0; i < v->n; ++i) {
        int64_t x = 0;
        if (!read_integer(v->elem_type, v->data + i * es, x) || x < min || x > max) {
            fail(NEMOTRON_ERR_INVALID_MODEL, "metadata key '%s' element %llu = %lld is out of range [%lld, %lld]",
                 key.c_str(), (unsigned long long) i, (long long) x, (long long) min, (long long) max);
        }
        out.push_back(x);
    }
    return true;
}

} // namespace nemotron
