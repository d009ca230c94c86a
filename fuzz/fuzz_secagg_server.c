/*
 * fuzz_secagg_server: the coordinator's secure-aggregation server
 * (secagg/fl_secagg.h, fl_secagg_server_receive at each step, then
 * advance, reconstruction and the sum), fed one hostile party's message.
 *
 * A whole round runs with fixed identities and inputs; party F's message
 * at step S is the input (after its first byte), and F sends nothing after
 * it. The other parties carry on honestly with whatever the server relays,
 * so an accepted hostile message is also followed through the honest
 * clients and the server's unmasking.
 *
 * First input byte:
 *   bits 0-2  step S (value mod 5: advertise, share, masked, consist, unmask)
 *   bits 3-4  round configuration (fuzz_secagg_round.c)
 *   bits 5-6  party F (mod n)
 *   bit 7     re-sign the message as F would (an enrolled but malicious
 *             node holds its own key): an ADVERT is signed over its first
 *             101 bytes, a CONSIST over the round's U3
 *
 * Properties checked beyond "no crash": every rejection has a message; a
 * round that completes gives its sum and counters.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_secagg_round.h"
#include "fuzz/fuzz_support.h"
#include "secagg/fl_secagg_internal.h"

static void s_up(fuzz_secagg_round *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    if (party != r->fuzz_party || step < r->fuzz_step)
        return;
    free(*msg);
    *msg = NULL;
    *len = 0;
    if (step > r->fuzz_step) {
        r->dead[party] = 1;
        return;
    }
    *msg = malloc(r->fuzz_len ? r->fuzz_len : 1);
    if (!*msg)
        abort();
    if (r->fuzz_len)
        memcpy(*msg, r->fuzz, r->fuzz_len);
    *len = r->fuzz_len;
    if (r->resign && step == 0 && *len == FL_SECAGG_ADVERT_LEN)
        fuzz_secagg_resign_advert(r, *msg);
    if (r->resign && step == 3 && *len == FL_SECAGG_CONSIST_LEN)
        fuzz_secagg_resign_consist(r, *msg + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_secagg_round r;

    fuzz_init();
    if (size < 1 || size > (1u << 20))
        return 0;
    fuzz_secagg_round_init(&r, (data[0] >> 3) & 3u);
    r.fuzz_step = (data[0] & 7) % 5;
    r.fuzz_party = ((data[0] >> 5) & 3u) % r.p.n;
    r.resign = (data[0] & 0x80) != 0;
    r.fuzz = data + 1;
    r.fuzz_len = size - 1;
    r.up = s_up;
    (void)fuzz_secagg_round_run(&r);
    fuzz_secagg_round_free(&r);
    return 0;
}
