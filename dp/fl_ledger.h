/*
 * fl_ledger: a hospital's privacy ledger — a signed, hash-chained record of
 * every privacy expenditure, kept by the node and verifiable offline by the
 * hospital's privacy officer (flaudit verify).
 *
 * One JSON object per line, fields in this fixed order:
 *
 *   {"v":1,"seq":N,"time":"YYYY-MM-DDTHH:MM:SSZ","event":"charge",
 *    "node":"...","consortium":"...","round":R,"accountant":"rdp",
 *    "sampling":"poisson","q":Q,"sigma":S,"clip":C,"steps":T,
 *    "dataset_size":N,"total_steps":TT,"delta":D,"epsilon":E,
 *    "epsilon_max":M,"prev":"<hex SHA-256 of the previous line>",
 *    "sig":"<hex Ed25519 signature>"}
 *
 * `epsilon` is the node's cumulative epsilon at `delta` after this charge,
 * under `accountant`, composing every charge of the ledger so far.  `prev`
 * is the SHA-256 of the previous line's bytes (64 zeros on the first line),
 * so deleting, inserting or reordering lines breaks the chain; `sig` signs
 * every byte of the line before `,"sig":"` with the node's identity key, so
 * editing a line breaks its signature.
 *
 * Appends are one write() of the whole line followed by fsync.  A crash can
 * leave a torn last line (no newline): it is reported, never overwritten or
 * dropped; the node then terminates it and appends a "recovery" record
 * naming it ("event":"recovery","torn_line":K,"torn_sha256":"..."), whose
 * prev is the hash of the torn bytes.  A torn charge never released an
 * update: the node sends an update only after the charge's fsync returned.
 */
#ifndef FL_LEDGER_H
#define FL_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "dp/fl_accountant.h"
#include "error/fl_error.h"
#include "identity/fl_identity.h"

#define FL_LEDGER_MAX_BYTES (256u * 1024u * 1024u) /* refuse larger ledgers */
#define FL_LEDGER_MAX_LINE 4096u

/** One privacy expenditure. */
typedef struct {
    uint64_t seq;          /* 1-based line number */
    int64_t time;          /* Unix time, seconds, UTC */
    char node[65];
    char consortium[65];
    uint32_t round;
    fl_accountant_kind accountant;
    double q;              /* Poisson sampling rate */
    double sigma;          /* noise multiplier */
    double clip;           /* clipping norm C */
    uint64_t steps;        /* DP-SGD steps charged by this line */
    uint64_t dataset_size; /* local records (the N of q*N) */
    uint64_t total_steps;  /* steps charged by all charges so far */
    double delta;
    double epsilon;        /* cumulative, after this charge */
    double epsilon_max;    /* the node's cap when the charge was made */
} fl_ledger_charge;

/** What a full read of a ledger found. */
typedef struct {
    size_t lines;           /* complete lines read */
    size_t charges;         /* charge records */
    size_t recoveries;      /* recovery records (each names a torn line) */
    size_t bad_line;        /* first bad line (1-based), 0 if none */
    int torn_tail;          /* the last line is incomplete and not yet recovered */
    char what[512];         /* what is wrong with bad_line, or the torn tail */
    double epsilon;         /* cumulative epsilon after the last charge */
    uint8_t last_hash[32];  /* SHA-256 of the last complete line (or torn tail) */
} fl_ledger_status;

typedef struct fl_ledger fl_ledger;

/** Opens the ledger at `path` for node `node` with identity `id`, creating an empty one
 *  (mode 0600) if absent. Every existing line is verified with
 *  fl_ledger_verify against id's public key. A torn last line is recovered
 *  (terminated and followed by a signed recovery record) and reported in
 *  *recovered (may be NULL) with a warning for the caller to log; any other
 *  fault is FL_EPARSE naming the line, and the node must not train. */
FL_NODISCARD int fl_ledger_open(fl_ledger **out, const char *path, const fl_identity *id,
                                const char *node, int *recovered);

/** Number of charges, and charge i (0-based) — owned by the ledger. */
size_t fl_ledger_num_charges(const fl_ledger *l);
const fl_ledger_charge *fl_ledger_charge_at(const fl_ledger *l, size_t i);

/** Cumulative epsilon at `delta` under `kind` if a further charge of
 *  (q, sigma, steps) were made: the budget check before a round. */
FL_NODISCARD int fl_ledger_epsilon_after(const fl_ledger *l, fl_accountant_kind kind, double q,
                                         double sigma, uint64_t steps, double delta,
                                         double *eps);

/** Smallest sigma such that the ledger's charges plus `steps` more at rate q
 *  stay within target_eps at delta (bisection on the accountant). FL_EBUDGET
 *  if the charges already recorded leave no room. */
FL_NODISCARD int fl_ledger_calibrate_sigma(const fl_ledger *l, fl_accountant_kind kind, double q,
                                           uint64_t steps, double target_eps, double delta,
                                           double *sigma);

/** Appends a charge and fsyncs it before returning. The caller fills node,
 *  consortium, round, accountant, q, sigma, clip, steps, dataset_size, delta
 *  and epsilon_max; seq, time, total_steps and epsilon are computed here.
 *  FL_EBUDGET (nothing written) if the charge would exceed epsilon_max. */
FL_NODISCARD int fl_ledger_append_charge(fl_ledger *l, fl_ledger_charge *c);

/** Frees. NULL is a no-op. */
void fl_ledger_free(fl_ledger *l);

/** Reads and checks a whole ledger file: every line parses, seq runs 1..n,
 *  each prev is the hash of the line before, each signature verifies with
 *  `sign_pk` (skipped if sign_pk is NULL), each recorded epsilon equals an
 *  independent recomputation from the recorded parameters, totals add up,
 *  and no charge exceeds its cap. On return *st describes what was found;
 *  if charges is not NULL it receives a malloc'd array of the charges
 *  (caller frees). Returns FL_OK if the ledger is sound (a recovered torn
 *  line is sound; an unrecovered torn tail is not), FL_EPARSE with
 *  st->bad_line and st->what otherwise, FL_EIO if unreadable. */
FL_NODISCARD int fl_ledger_verify(const char *path, const uint8_t *sign_pk, fl_ledger_status *st,
                                  fl_ledger_charge **charges, size_t *num_charges);

#endif
