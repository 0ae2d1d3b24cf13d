// Token ids to text, as NeMo's SentencePiece tokenizer decodes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace nemotron {

// Word-start pieces ("\u2581...") become a space and the rest, byte pieces ("<0x41>") their
// byte, <unk> (id 0) " \u2047 "; the text's leading space is dropped and ids outside the
// vocabulary (the blank) are skipped, as SentencePieceProcessor.decode_ids does.
std::string detokenize(const std::vector<std::string> & pieces, const int32_t * ids, size_t n_ids);

} // namespace nemotron
