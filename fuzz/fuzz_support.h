/*
 * fuzz_support: what the fuzz targets share.
 *
 * - The libFuzzer entry point's prototype (the targets define it; the
 *   replay driver and libFuzzer call it).
 * - A deterministic libsodium random source, so that one input always takes
 *   the same path (identities, secure-aggregation keys, nonces): a crash
 *   found by the fuzzer replays exactly. It is installed before
 *   sodium_init and rewound at the start of every input. Only fuzz and
 *   replay binaries install it; no product code ever does.
 * - sodium_malloc, sodium_allocarray and sodium_free on top of malloc, for
 *   speed (see fuzz_support.c); they override libsodium's in the fuzz and
 *   replay binaries only.
 * - A private scratch directory per input (mkdtemp under $TMPDIR or /tmp,
 *   removed with everything in it afterwards) for decoders that only take
 *   paths: a harness writes nothing anywhere else.
 */
#ifndef FUZZ_SUPPORT_H
#define FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "identity/fl_identity.h"

/** The libFuzzer entry point: decodes one input, never fails. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/** Installs the deterministic random source (first call only) and rewinds
 *  it to the start of its stream, then initialises libsodium. Call first
 *  thing in every LLVMFuzzerTestOneInput. */
void fuzz_init(void);

/** A fixed identity, derived from `index` (the same in every run and every
 *  build): fuzz_make_seeds signs seed files with it and the harnesses verify
 *  with it. The caller frees it with fl_identity_free. Aborts on failure. */
fl_identity *fuzz_identity(unsigned index);

/** The secret identity file text of fuzz_identity(index) into text (cap
 *  bytes); returns its length. */
size_t fuzz_identity_text(unsigned index, char *text, size_t cap);

/** A scratch directory: path holds its name, usable while it exists. */
typedef struct {
    char path[512];
} fuzz_dir;

/** Creates a fresh private directory. Aborts on failure (the harness cannot
 *  run without one, and that is not a finding about the decoder). */
void fuzz_dir_new(fuzz_dir *d);

/** Writes `len` bytes to DIR/name (mode 0600) and puts its path in `path`
 *  (cap bytes). Aborts on failure. */
void fuzz_dir_write(const fuzz_dir *d, const char *name, const uint8_t *data, size_t len,
                    char *path, size_t cap);

/** Removes the directory and everything in it. */
void fuzz_dir_remove(fuzz_dir *d);

/** Hex-encodes `n` bytes into `out` (2n + 1 bytes with the NUL). */
void fuzz_hex(char *out, const uint8_t *in, size_t n);

#endif
