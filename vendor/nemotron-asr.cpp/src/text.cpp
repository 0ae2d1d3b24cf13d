#include "text.h"

namespace nemotron {

namespace {

const std::string kWordStart = "\xE2\x96\x81";     // U+2581, SentencePiece's word-start mark
const std::string kUnknownSurface = " \xE2\x81\x87 "; // " U+2047 ", how SentencePiece prints <unk>

// The byte of a byte-fallback piece "<0xNN>", or -1.
int byte_piece(const std::string & piece) {
    if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
    int value = 0;
    for (size_t i = 3; i < 5; ++i) {
        const char c = piece[i];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

} // namespace

std::string detokenize(const std::vector<std::string> & pieces, const int32_t * ids, size_t n_ids) {
    std::string out;
    for (size_t k = 0; k < n_ids; ++k) {
        const int32_t id = ids[k];
        if (id < 0 || size_t(id) >= pieces.size()) continue;
        const std::string & piece = pieces[size_t(id)];
        const int byte = byte_piece(piece);
        if (byte >= 0) {
            out += char(byte);
        } else if (id == 0 && piece == "<unk>") {
            out += kUnknownSurface;
        } else {
            for (size_t i = 0; i < piece.size();) {
                if (piece.compare(i, kWordStart.size(), kWordStart) == 0) {
                    out += ' ';
                    i += kWordStart.size();
                } else {
                    out += piece[i++];
                }
            }
        }
    }
    if (!out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
}

} // namespace nemotron
