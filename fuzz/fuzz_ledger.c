/*
 * fuzz_ledger: a node's privacy ledger (dp/fl_ledger.h): the offline
 * reader and verifier (fl_ledger_verify, behind flaudit verify and report)
 * and the node's own start-up (fl_ledger_open: verify, recover a torn last
 * line, then charge).
 *
 * The first input byte chooses how the rest is used:
 *   bit 0  fix up the chain and signatures first: every "prev" that holds
 *          64 characters becomes the hex SHA-256 of the line before, and a
 *          trailing ,"sig":"<128 characters>"} is re-signed with the fixed
 *          fuzz identity; without this the fuzzer could not get past the
 *          first line's checks (a forger without the key cannot either)
 *   bit 1  verify with the fixed identity's public key (else no key: chain,
 *          fields and epsilon recomputation only)
 *   bit 2  open as the node does (with the fixed identity), then append a
 *          charge; the file must then verify as sound
 *
 * Properties checked beyond "no crash": a rejection names a bad line or a
 * torn tail; after fl_ledger_open succeeds (and after an append) the file
 * verifies with the node's key.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_ledger.h"
#include "fuzz/fuzz_support.h"

#define S_SIG_MARK ",\"sig\":\""
#define S_PREV_MARK "\"prev\":\""

static fl_identity *s_id;

static const char *s_find(const char *hay, size_t len, const char *needle, int last)
{
    size_t n = strlen(needle);
    const char *hit = NULL;
    for (size_t k = 0; k + n <= len; k++)
        if (memcmp(hay + k, needle, n) == 0) {
            hit = hay + k;
            if (!last)
                break;
        }
    return hit;
}

/* Re-chains and re-signs buf in place, line by line. */
static void s_fix_up(char *buf, size_t len)
{
    uint8_t prev[32] = {0};
    size_t pos = 0;
    while (pos < len) {
        char *line = buf + pos;
        char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        char *p = (char *)s_find(line, llen, S_PREV_MARK, 0);
        char *s = (char *)s_find(line, llen, S_SIG_MARK, 1);
        size_t ml = sizeof S_SIG_MARK - 1;

        if (p && (size_t)(line + llen - p) >= sizeof S_PREV_MARK - 1 + 64) {
            char hex[65];
            fuzz_hex(hex, prev, 32);
            memcpy(p + sizeof S_PREV_MARK - 1, hex, 64);
        }
        if (s && (size_t)(line + llen - s) == ml + 128 + 2) {
            uint8_t sig[FL_IDENTITY_SIG_BYTES];
            char hex[129];
            fl_identity_sign(s_id, line, (size_t)(s - line), sig);
            fuzz_hex(hex, sig, sizeof sig);
            memcpy(s + ml, hex, 128);
        }
        crypto_hash_sha256(prev, (const unsigned char *)line, llen);
        pos += llen + (nl ? 1 : 0);
    }
}

static void s_open_and_charge(const char *path)
{
    const uint8_t *pk = fl_identity_public_of(s_id)->sign_pk;
    fl_ledger *l = NULL;
    fl_ledger_status st;
    fl_ledger_charge c;
    double eps = 0.0;
    int recovered = 0;

    if (fl_ledger_open(&l, path, s_id, "fuzz-node", &recovered) != FL_OK) {
        if (l || !fl_error_last()[0])
            abort();
        return;
    }
    if (fl_ledger_verify(path, pk, &st, NULL, NULL) != FL_OK)
        abort(); /* open accepted (or repaired) a ledger that does not verify */
    if (fl_ledger_epsilon_after(l, FL_ACCOUNTANT_RDP, 0.01, 1.1, 10, 1e-5, &eps) != FL_OK &&
        !fl_error_last()[0])
        abort();
    memset(&c, 0, sizeof c);
    snprintf(c.node, sizeof c.node, "fuzz-node");
    snprintf(c.consortium, sizeof c.consortium, "hospitals");
    c.round = 1;
    c.accountant = FL_ACCOUNTANT_RDP;
    c.q = 0.01;
    c.sigma = 1.1;
    c.clip = 1.0;
    c.steps = 10;
    c.dataset_size = 1000;
    c.delta = 1e-5;
    c.epsilon_max = 1e6;
    if (fl_ledger_append_charge(l, &c) == FL_OK &&
        fl_ledger_verify(path, pk, &st, NULL, NULL) != FL_OK)
        abort(); /* an append made the ledger unsound */
    fl_ledger_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    char path[1024];
    char *buf;
    unsigned mode;

    fuzz_init();
    if (!s_id)
        s_id = fuzz_identity(0);
    if (size < 1 || size > 1u << 20)
        return 0;
    mode = data[0];
    buf = malloc(size);
    if (!buf)
        abort();
    memcpy(buf, data + 1, size - 1);
    if (mode & 1)
        s_fix_up(buf, size - 1);
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "ledger.jsonl", (const uint8_t *)buf, size - 1, path, sizeof path);
    if (mode & 4) {
        s_open_and_charge(path);
    } else {
        fl_ledger_status st;
        fl_ledger_charge *charges = NULL;
        size_t n = 0;
        int rc = fl_ledger_verify(path, (mode & 2) ? fl_identity_public_of(s_id)->sign_pk : NULL,
                                  &st, &charges, &n);
        if (rc == FL_OK) {
            if (st.bad_line || st.torn_tail || st.charges != n)
                abort();
        } else if (rc == FL_EPARSE && !st.bad_line) {
            abort(); /* a rejection must name the line */
        }
        free(charges);
    }
    free(buf);
    fuzz_dir_remove(&d);
    return 0;
}
