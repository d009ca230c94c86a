/*
 * flaudit: the privacy officer's command-line tool.
 *
 *   flaudit epsilon   --q Q --sigma S --steps T --delta D   epsilon of a DP-SGD run
 *   flaudit calibrate --epsilon E --delta D --q Q --steps T smallest sigma for a target
 *   flaudit verify LEDGER --key NODE.pub                    check a node's privacy ledger
 *   flaudit report LEDGER [--key NODE.pub]                  sessions, charges, budget
 *
 * Everything here works offline, from the ledger file and the node's public
 * identity file alone: the officer does not need the node's secret key, its
 * data, or the coordinator.  The checks themselves are fl_ledger_verify's
 * (dp/fl_ledger.h: hash chain, seq, Ed25519 signature and an independent
 * recomputation of every recorded epsilon); this program adds two checks
 * of its own (see s_check_extra) and presents the result for a person
 * (aligned tables), for scripts (--json, --csv) and as a self-contained
 * HTML page with a chart (--html).
 *
 * Exit status: 0 success (ledger verified), 1 failure (a bad ledger, an
 * unreadable file, an accountant error), 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dp/fl_accountant.h"
#include "dp/fl_ledger.h"
#include "identity/fl_identity.h"
#include "log/fl_log.h"
#include "storage/fl_storage.h"

#define S_EXIT_FAIL 1
#define S_EXIT_USAGE 2
#define S_SIG_MARK ",\"sig\":\""
#define S_RECOVERY "\"event\":\"recovery\""
#define S_TORN "\"torn_line\":"
#define S_CURVE_COLOUR "#d62728" /* the epsilon curve; used for nothing else */

/* ------------------------------------------------------------ usage */

static const char *const S_USAGE_MAIN =
    "usage: flaudit epsilon --q Q --sigma S --steps T --delta D [--accountant rdp|pld] [--json]\n"
    "       flaudit calibrate --epsilon E --delta D --q Q --steps T [--accountant rdp|pld]\n"
    "                         [--json]\n"
    "       flaudit verify LEDGER --key NODE_PUB_FILE [--anchor N:SHA256] [--json]\n"
    "       flaudit report LEDGER [--key NODE_PUB_FILE] [--json | --csv | --html FILE]\n"
    "       flaudit COMMAND --help | flaudit --help | --version\n\n"
    "The privacy officer's tool: recompute epsilon, plan noise, and verify and\n"
    "report a hospital node's signed, hash-chained privacy ledger, offline.\n\n"
    "  epsilon    epsilon of T DP-SGD steps with Poisson rate q and noise multiplier sigma\n"
    "  calibrate  the smallest noise multiplier that keeps T steps within epsilon\n"
    "  verify     check every hash link, signature, seq and recorded epsilon of a ledger\n"
    "  report     training sessions, charges and the remaining budget of a ledger\n\n"
    "Exit status: 0 success, 1 failure (a ledger that does not verify, an unreadable\n"
    "file), 2 usage error.  See docs/privacy.md.\n";

static const char *const S_USAGE_EPSILON =
    "usage: flaudit epsilon --q Q --sigma S --steps T --delta D [--accountant rdp|pld] [--json]\n\n"
    "Prints the epsilon at delta D of T steps of DP-SGD with Poisson sampling rate Q\n"
    "(0 < Q <= 1) and noise multiplier S (> 0): the Poisson-subsampled Gaussian\n"
    "mechanism composed T times.\n\n"
    "  --accountant rdp  Renyi DP (Mironov, Talwar & Zhang 2019), the default; also\n"
    "                    prints the best Renyi order\n"
    "  --accountant pld  privacy loss distribution (tighter, slower)\n"
    "  --json            one JSON object on one line: epsilon, delta, accountant, q,\n"
    "                    sigma, steps (and order for rdp)\n\n"
    "example: flaudit epsilon --q 0.0042667 --sigma 1.1 --steps 14063 --delta 1e-5\n";

static const char *const S_USAGE_CALIBRATE =
    "usage: flaudit calibrate --epsilon E --delta D --q Q --steps T [--accountant rdp|pld]\n"
    "                         [--json]\n\n"
    "Prints the smallest noise multiplier sigma (searched in [0.1, 1000], rounded up)\n"
    "such that T DP-SGD steps at Poisson rate Q stay within epsilon E at delta D.\n"
    "This is how a node plans its noise for a whole training session.\n\n"
    "  --accountant rdp|pld  as for 'flaudit epsilon' (default rdp)\n"
    "  --json                one JSON object on one line with sigma and the epsilon\n"
    "                        it achieves\n";

static const char *const S_USAGE_VERIFY =
    "usage: flaudit verify LEDGER --key NODE_PUB_FILE [--anchor N:SHA256] [--json]\n\n"
    "Checks a node's privacy ledger against the node's public identity file (the\n"
    "NAME.pub that 'flnode init' wrote): every line parses, seq runs 1..n, each line\n"
    "carries the SHA-256 of the line before, each line's Ed25519 signature verifies,\n"
    "every recorded epsilon equals an independent recomputation, and no charge\n"
    "exceeds its cap.  Exit 0 if all hold; otherwise exit 1 naming the first bad\n"
    "line and what is wrong.  Lines torn by a crash and recovered by the node are\n"
    "reported as a note.\n\n"
    "  --key FILE       the node's public identity file (required)\n"
    "  --anchor N:HASH  also require that line N still has this SHA-256 (the 'head'\n"
    "                   printed by an earlier verify): detects lines removed from\n"
    "                   the end, or a history rewritten with the node's own key\n"
    "  --json           one JSON object: ok, lines, charges, recoveries, epsilon,\n"
    "                   bad_line, error, head\n";

static const char *const S_USAGE_REPORT =
    "usage: flaudit report LEDGER [--key NODE_PUB_FILE] [--json | --csv | --html FILE]\n\n"
    "Summarises a node's privacy ledger: its training sessions (consecutive charges\n"
    "with the same consortium, q, sigma and clip norm), and the budget: cap,\n"
    "epsilon spent, remaining, delta and accountant.  The ledger is always checked\n"
    "(hash chain, seq, recomputed epsilon); with --key the signatures too, and\n"
    "every format says whether it verified.  A ledger that fails is not reported.\n\n"
    "  (default)    aligned tables for a person\n"
    "  --json       {\"sessions\":[...],\"charges\":[...],\"budget\":{...},\"verified\":...}\n"
    "  --csv        one row per charge, with a header\n"
    "  --html FILE  one self-contained HTML page: tables and a chart of cumulative\n"
    "               epsilon over time against the cap\n";

/* Says what is wrong with the arguments, then the usage, on stderr. */
static int s_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    FL_PRINTF(3, 4);

static int s_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "flaudit %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage);
    return S_EXIT_USAGE;
}

/* ------------------------------------------------------ formatting */

/* Shortest decimal that reads back as exactly v (as the ledger writes its
 * numbers), so a script gets the very double we computed. */
static void s_fmt_num(char *buf, size_t cap, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "null");
        return;
    }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void s_fmt_time(char *buf, size_t cap, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) {
        snprintf(buf, cap, "?");
        return;
    }
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void s_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void s_json_num(FILE *f, double v)
{
    char b[40];
    s_fmt_num(b, sizeof b, v);
    fputs(b, f);
}

/* "key":value pairs; `first` tracks the comma. */
static void s_jk(FILE *f, int *first, const char *key)
{
    fprintf(f, "%s\"%s\":", *first ? "" : ",", key);
    *first = 0;
}

static void s_html(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* RFC 4180: quote a field holding a comma, quote or line break. */
static void s_csv(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* ------------------------------------------------ argument parsing */

static int s_parse_double(const char *cmd, const char *usage, const char *opt, const char *s,
                          double *out)
{
    char *end = NULL;
    errno = 0;
    *out = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(*out))
        return s_usage_error(cmd, usage, "%s '%s' is not a finite number", opt, s);
    return 0;
}

static int s_parse_u64(const char *cmd, const char *usage, const char *opt, const char *s,
                       uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-' || s[0] == '+')
        return s_usage_error(cmd, usage, "%s '%s' is not a non-negative integer", opt, s);
    *out = (uint64_t)v;
    return 0;
}

/* Checks shared by epsilon and calibrate, with the reason a person needs. */
static int s_check_q_delta(const char *cmd, const char *usage, double q, double delta)
{
    char b[40];
    if (!(q > 0.0 && q <= 1.0)) {
        s_fmt_num(b, sizeof b, q);
        return s_usage_error(cmd, usage, "--q %s must be a sampling rate in (0, 1]", b);
    }
    if (!(delta > 0.0 && delta < 1.0)) {
        s_fmt_num(b, sizeof b, delta);
        return s_usage_error(cmd, usage, "--delta %s must be in (0, 1)", b);
    }
    return 0;
}

enum {
    S_OPT_Q = 1000,
    S_OPT_SIGMA,
    S_OPT_STEPS,
    S_OPT_DELTA,
    S_OPT_EPSILON,
    S_OPT_ACCOUNTANT,
    S_OPT_JSON,
    S_OPT_CSV,
    S_OPT_HTML,
    S_OPT_KEY,
    S_OPT_ANCHOR,
    S_OPT_HELP
};

/* ---------------------------------------------------- epsilon, calibrate */

static int s_cmd_epsilon(int argc, char **argv, int calibrate)
{
    static const struct option opts[] = {{"q", required_argument, 0, S_OPT_Q},
                                         {"sigma", required_argument, 0, S_OPT_SIGMA},
                                         {"steps", required_argument, 0, S_OPT_STEPS},
                                         {"delta", required_argument, 0, S_OPT_DELTA},
                                         {"epsilon", required_argument, 0, S_OPT_EPSILON},
                                         {"accountant", required_argument, 0, S_OPT_ACCOUNTANT},
                                         {"json", no_argument, 0, S_OPT_JSON},
                                         {"help", no_argument, 0, S_OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *cmd = calibrate ? "calibrate" : "epsilon";
    const char *usage = calibrate ? S_USAGE_CALIBRATE : S_USAGE_EPSILON;
    double q = NAN, sigma = NAN, delta = NAN, target = NAN, eps = NAN, order = 0.0;
    uint64_t steps = 0;
    int have_steps = 0, json = 0, c, rc;
    fl_accountant_kind kind = FL_ACCOUNTANT_RDP;
    char bq[40], bs[40], bd[40], be[40];

    optind = 2;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case S_OPT_Q:
            if (s_parse_double(cmd, usage, "--q", optarg, &q))
                return S_EXIT_USAGE;
            break;
        case S_OPT_SIGMA:
            if (calibrate)
                return s_usage_error(cmd, usage, "%s is not an option of calibrate (it "
                                     "computes sigma)", "--sigma");
            if (s_parse_double(cmd, usage, "--sigma", optarg, &sigma))
                return S_EXIT_USAGE;
            break;
        case S_OPT_EPSILON:
            if (!calibrate)
                return s_usage_error(cmd, usage, "%s is not an option of epsilon (it "
                                     "computes epsilon; see calibrate)", "--epsilon");
            if (s_parse_double(cmd, usage, "--epsilon", optarg, &target))
                return S_EXIT_USAGE;
            break;
        case S_OPT_STEPS:
            if (s_parse_u64(cmd, usage, "--steps", optarg, &steps))
                return S_EXIT_USAGE;
            have_steps = 1;
            break;
        case S_OPT_DELTA:
            if (s_parse_double(cmd, usage, "--delta", optarg, &delta))
                return S_EXIT_USAGE;
            break;
        case S_OPT_ACCOUNTANT:
            if (fl_accountant_parse(optarg, &kind) != FL_OK)
                return s_usage_error(cmd, usage, "--accountant '%s': use 'rdp' or 'pld'",
                                     optarg);
            break;
        case S_OPT_JSON: json = 1; break;
        case S_OPT_HELP: fputs(usage, stdout); return 0;
        default:
            return s_usage_error(cmd, usage, "unknown or incomplete option '%s'",
                                 argv[optind - 1]);
        }
    }
    if (optind != argc)
        return s_usage_error(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (isnan(q) || isnan(delta) || !have_steps || (calibrate ? isnan(target) : isnan(sigma)))
        return s_usage_error(cmd, usage, "%s",
                             calibrate ? "--epsilon, --delta, --q and --steps are required"
                                       : "--q, --sigma, --steps and --delta are required");
    if (s_check_q_delta(cmd, usage, q, delta))
        return S_EXIT_USAGE;
    s_fmt_num(bq, sizeof bq, q);
    s_fmt_num(bd, sizeof bd, delta);

    if (!calibrate) {
        if (!(sigma > 0.0)) {
            s_fmt_num(bs, sizeof bs, sigma);
            return s_usage_error(cmd, usage, "--sigma %s must be > 0 (without noise there is "
                                 "no privacy: epsilon is infinite)", bs);
        }
        /* RDP through fl_accountant_epsilon for the minimising order too. */
        if (kind == FL_ACCOUNTANT_RDP)
            rc = fl_accountant_epsilon(q, sigma, steps, delta, &eps, &order);
        else
            rc = fl_accountant_epsilon_with(kind, q, sigma, steps, delta, &eps);
        if (rc != FL_OK) {
            fprintf(stderr, "flaudit epsilon: %s\n", fl_error_last());
            return S_EXIT_FAIL;
        }
        s_fmt_num(bs, sizeof bs, sigma);
        if (json) {
            int first = 1;
            fputc('{', stdout);
            s_jk(stdout, &first, "epsilon");
            s_json_num(stdout, eps);
            s_jk(stdout, &first, "delta");
            s_json_num(stdout, delta);
            s_jk(stdout, &first, "accountant");
            s_json_str(stdout, fl_accountant_name(kind));
            s_jk(stdout, &first, "q");
            s_json_num(stdout, q);
            s_jk(stdout, &first, "sigma");
            s_json_num(stdout, sigma);
            s_jk(stdout, &first, "steps");
            printf("%llu", (unsigned long long)steps);
            if (kind == FL_ACCOUNTANT_RDP) {
                s_jk(stdout, &first, "order");
                s_json_num(stdout, order);
            }
            fputs("}\n", stdout);
        } else {
            printf("epsilon = %.6g at delta = %s after %llu DP-SGD steps with Poisson sampling "
                   "rate q = %s and noise multiplier sigma = %s (%s accountant",
                   eps, bd, (unsigned long long)steps, bq, bs,
                   kind == FL_ACCOUNTANT_RDP ? "RDP" : "PLD");
            if (kind == FL_ACCOUNTANT_RDP && order > 0)
                printf(", best Renyi order %.4g", order);
            printf(")\n");
        }
        return 0;
    }

    if (!(target > 0.0)) {
        s_fmt_num(be, sizeof be, target);
        return s_usage_error(cmd, usage, "--epsilon %s must be > 0", be);
    }
    s_fmt_num(be, sizeof be, target);
    rc = fl_accountant_calibrate_sigma_with(kind, q, steps, target, delta, &sigma);
    if (rc != FL_OK) {
        fprintf(stderr, "flaudit calibrate: %s\n", fl_error_last());
        return S_EXIT_FAIL;
    }
    if (!json) {
        /* Show 4 decimals, rounded UP: a smaller printed sigma could exceed
         * the target if someone copied it into a configuration. */
        double shown = ceil(sigma * 1e4) / 1e4;
        if ((rc = fl_accountant_epsilon_with(kind, q, shown, steps, delta, &eps)) != FL_OK) {
            fprintf(stderr, "flaudit calibrate: %s\n", fl_error_last());
            return S_EXIT_FAIL;
        }
        printf("sigma = %.4f: the smallest noise multiplier (rounded up) that keeps %llu "
               "DP-SGD steps at Poisson sampling rate q = %s within epsilon %s at delta = %s "
               "(%s accountant; it gives epsilon = %.6g)\n",
               shown, (unsigned long long)steps, bq, be, bd,
               kind == FL_ACCOUNTANT_RDP ? "RDP" : "PLD", eps);
        return 0;
    }
    if ((rc = fl_accountant_epsilon_with(kind, q, sigma, steps, delta, &eps)) != FL_OK) {
        fprintf(stderr, "flaudit calibrate: %s\n", fl_error_last());
        return S_EXIT_FAIL;
    }
    {
        int first = 1;
        fputc('{', stdout);
        s_jk(stdout, &first, "sigma");
        s_json_num(stdout, sigma);
        s_jk(stdout, &first, "epsilon");
        s_json_num(stdout, eps);
        s_jk(stdout, &first, "epsilon_target");
        s_json_num(stdout, target);
        s_jk(stdout, &first, "delta");
        s_json_num(stdout, delta);
        s_jk(stdout, &first, "accountant");
        s_json_str(stdout, fl_accountant_name(kind));
        s_jk(stdout, &first, "q");
        s_json_num(stdout, q);
        s_jk(stdout, &first, "steps");
        printf("%llu", (unsigned long long)steps);
        fputs("}\n", stdout);
    }
    return 0;
}

/* ---------------------------------------------------------- verifying */

/* What verifying a ledger found, for every output format. */
typedef struct {
    const char *path;
    int io_error;          /* the file (or key) could not be read: error[] says why */
    int ok;                /* sound: every check passed */
    int signatures;        /* signatures were checked (a key was given) */
    fl_ledger_status st;
    fl_ledger_charge *ch;  /* the charges, when ok (malloc'd) */
    size_t n;
    size_t bad_line;       /* first bad line, 0 if none */
    char error[1024];      /* what is wrong, or the I/O error */
    size_t *recovered;     /* line numbers of recovered torn lines (malloc'd) */
    size_t num_recovered;
    char head[128];        /* "N:<hex SHA-256 of line N>", the last complete line */
} s_audit;

static void s_audit_free(s_audit *a)
{
    free(a->ch);
    free(a->recovered);
    a->ch = NULL;
    a->recovered = NULL;
}

/* Marks line `line` bad with a reason, keeping the earliest bad line. */
static void s_audit_bad(s_audit *a, size_t line, const char *what)
{
    if (a->bad_line && a->bad_line <= line)
        return;
    a->ok = 0;
    a->bad_line = line;
    snprintf(a->error, sizeof a->error, "%s", what);
}

/* The first occurrence of needle (n bytes) in hay (len bytes), or NULL. */
static const char *s_find(const char *hay, size_t len, const char *needle, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

/* Parses "N:HEX" (a line number and 64 hex digits). */
static int s_parse_anchor(const char *s, size_t *line, uint8_t hash[32])
{
    char *end = NULL;
    unsigned long long v;
    size_t bin_len = 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end != ':' || v == 0 || s[0] == '-' || s[0] == '+' ||
        strlen(end + 1) != 64 ||
        sodium_hex2bin(hash, 32, end + 1, 64, NULL, &bin_len, NULL) != 0 || bin_len != 32)
        return -1;
    *line = (size_t)v;
    return 0;
}

/*
 * Checks flaudit makes beyond fl_ledger_verify, on the same bytes:
 *
 * --anchor N:HASH: line N must exist and hash to HASH.  The chain and
 *    the signatures cannot show that lines were cut from the end, nor a
 *    history rewritten by whoever holds the node's key; a head noted by the
 *    officer at an earlier audit can.
 *
 * Also lists the lines that recovery records name (torn by a crash).
 */
static int s_check_extra(s_audit *a, const size_t *anchor_line, const uint8_t *anchor_hash)
{
    unsigned char *buf = NULL;
    size_t len = 0, pos = 0, line_no = 0, cap = 0;
    int anchor_seen = 0;
    int rc = fl_storage_read_all(a->path, FL_LEDGER_MAX_BYTES, &buf, &len);
    if (rc != FL_OK) {
        a->io_error = 1;
        a->ok = 0;
        snprintf(a->error, sizeof a->error, "%s", fl_error_last());
        return rc;
    }
    while (pos < len) {
        const char *line = (const char *)buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        const char *mark = NULL;
        uint8_t hash[32];

        line_no++;
        pos += llen + (nl ? 1 : 0);
        for (size_t k = 0; k + sizeof S_SIG_MARK - 1 <= llen; k++)
            if (memcmp(line + k, S_SIG_MARK, sizeof S_SIG_MARK - 1) == 0)
                mark = line + k;
        if (nl && mark && s_find(line, llen, S_RECOVERY, sizeof S_RECOVERY - 1)) {
            const char *t = s_find(line, llen, S_TORN, sizeof S_TORN - 1);
            if (t) {
                if (a->num_recovered == cap) {
                    size_t nc = cap ? 2 * cap : 8;
                    size_t *g = realloc(a->recovered, nc * sizeof *g);
                    if (!g) {
                        free(buf);
                        return fl_error_set(FL_ENOMEM, "out of memory");
                    }
                    a->recovered = g;
                    cap = nc;
                }
                a->recovered[a->num_recovered++] = (size_t)strtoull(t + sizeof S_TORN - 1, NULL, 10);
            }
        }
        if (anchor_line && nl && line_no == *anchor_line) {
            anchor_seen = 1;
            crypto_hash_sha256(hash, (const unsigned char *)line, llen);
            if (sodium_memcmp(hash, anchor_hash, 32) != 0)
                s_audit_bad(a, line_no, "its SHA-256 differs from the anchor noted at an "
                            "earlier audit: the history from this line on was rewritten");
        }
    }
    if (anchor_line && !anchor_seen) {
        char what[256];
        snprintf(what, sizeof what, "missing: the ledger has only %zu complete lines, but the "
                 "anchor noted at an earlier audit names line %zu: lines were removed from "
                 "the end", a->st.lines, *anchor_line);
        s_audit_bad(a, *anchor_line, what);
    }
    free(buf);
    return FL_OK;
}

/* Verifies `path` (signatures only if sign_pk is not NULL) into *a. */
static void s_audit_run(s_audit *a, const char *path, const uint8_t *sign_pk,
                        const size_t *anchor_line, const uint8_t *anchor_hash)
{
    char hex[65];
    int rc;

    memset(a, 0, sizeof *a);
    a->path = path;
    a->signatures = sign_pk != NULL;
    rc = fl_ledger_verify(path, sign_pk, &a->st, &a->ch, &a->n);
    if (rc != FL_OK && rc != FL_EPARSE) {
        a->io_error = 1;
        snprintf(a->error, sizeof a->error, "%s", fl_error_last());
        return;
    }
    a->ok = rc == FL_OK;
    if (rc == FL_EPARSE) {
        if (a->st.torn_tail)
            s_audit_bad(a, a->st.bad_line, "incomplete (no newline at the end): an append "
                        "was interrupted, or the file was cut; flnode recovers a torn line at "
                        "its next start");
        else
            s_audit_bad(a, a->st.bad_line, a->st.what);
    }
    if (s_check_extra(a, anchor_line, anchor_hash) != FL_OK) {
        if (!a->io_error) {
            a->io_error = 1;
            snprintf(a->error, sizeof a->error, "%s", fl_error_last());
        }
        a->ok = 0;
        return;
    }
    if (!a->ok) {
        free(a->ch);
        a->ch = NULL;
        a->n = 0;
    }
    sodium_bin2hex(hex, sizeof hex, a->st.last_hash, 32);
    snprintf(a->head, sizeof a->head, "%zu:%s", a->st.lines, hex);
}

static int s_load_key(const char *cmd, const char *key_path, fl_identity_public *pub)
{
    if (fl_identity_load_public(pub, key_path) != FL_OK) {
        fprintf(stderr, "flaudit %s: %s\n", cmd, fl_error_last());
        return -1;
    }
    return 0;
}

static void s_print_failure(const char *cmd, const s_audit *a)
{
    if (a->io_error)
        fprintf(stderr, "flaudit %s: %s\n", cmd, a->error);
    else
        fprintf(stderr, "flaudit %s: ledger %s: line %zu: %s\n", cmd, a->path, a->bad_line,
                a->error);
}

static int s_cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, 0, S_OPT_KEY},
                                         {"anchor", required_argument, 0, S_OPT_ANCHOR},
                                         {"json", no_argument, 0, S_OPT_JSON},
                                         {"help", no_argument, 0, S_OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *key = NULL, *anchor = NULL, *path;
    fl_identity_public pub;
    size_t anchor_line = 0;
    uint8_t anchor_hash[32];
    int json = 0, c;
    s_audit a;

    optind = 2;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case S_OPT_KEY: key = optarg; break;
        case S_OPT_ANCHOR: anchor = optarg; break;
        case S_OPT_JSON: json = 1; break;
        case S_OPT_HELP: fputs(S_USAGE_VERIFY, stdout); return 0;
        default:
            return s_usage_error("verify", S_USAGE_VERIFY, "unknown or incomplete option '%s'",
                                 argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return s_usage_error("verify", S_USAGE_VERIFY, "%s", "LEDGER is required");
    if (optind + 1 < argc)
        return s_usage_error("verify", S_USAGE_VERIFY, "unexpected argument '%s'",
                             argv[optind + 1]);
    path = argv[optind];
    if (!key)
        return s_usage_error("verify", S_USAGE_VERIFY, "%s",
                             "--key NODE_PUB_FILE is required: without the node's public key "
                             "the signatures cannot be checked (see 'flaudit report' for an "
                             "unsigned summary)");
    if (anchor && s_parse_anchor(anchor, &anchor_line, anchor_hash) != 0)
        return s_usage_error("verify", S_USAGE_VERIFY,
                             "--anchor '%s' must be N:SHA256 (a line number, a colon and 64 hex "
                             "digits, as printed by verify)", anchor);
    if (s_load_key("verify", key, &pub) != 0)
        return S_EXIT_FAIL;
    s_audit_run(&a, path, pub.sign_pk, anchor ? &anchor_line : NULL, anchor_hash);

    if (json) {
        int first = 1;
        fputc('{', stdout);
        s_jk(stdout, &first, "ok");
        fputs(a.ok ? "true" : "false", stdout);
        s_jk(stdout, &first, "ledger");
        s_json_str(stdout, path);
        s_jk(stdout, &first, "key");
        s_json_str(stdout, pub.sign_z85);
        s_jk(stdout, &first, "lines");
        printf("%zu", a.st.lines);
        s_jk(stdout, &first, "charges");
        printf("%zu", a.st.charges);
        s_jk(stdout, &first, "recoveries");
        printf("%zu", a.st.recoveries);
        s_jk(stdout, &first, "recovered_lines");
        fputc('[', stdout);
        for (size_t i = 0; i < a.num_recovered; i++)
            printf("%s%zu", i ? "," : "", a.recovered[i]);
        fputc(']', stdout);
        s_jk(stdout, &first, "epsilon");
        s_json_num(stdout, a.st.epsilon);
        if (a.ok && a.n) {
            s_jk(stdout, &first, "epsilon_max");
            s_json_num(stdout, a.ch[a.n - 1].epsilon_max);
            s_jk(stdout, &first, "delta");
            s_json_num(stdout, a.ch[a.n - 1].delta);
            s_jk(stdout, &first, "accountant");
            s_json_str(stdout, fl_accountant_name(a.ch[a.n - 1].accountant));
        }
        s_jk(stdout, &first, "head");
        if (a.ok)
            s_json_str(stdout, a.head);
        else
            fputs("null", stdout);
        s_jk(stdout, &first, "bad_line");
        if (a.bad_line)
            printf("%zu", a.bad_line);
        else
            fputs("null", stdout);
        s_jk(stdout, &first, "error");
        if (a.ok)
            fputs("null", stdout);
        else if (a.io_error)
            s_json_str(stdout, a.error);
        else {
            char msg[1200];
            snprintf(msg, sizeof msg, "ledger %s: line %zu: %s", path, a.bad_line, a.error);
            s_json_str(stdout, msg);
        }
        fputs("}\n", stdout);
    } else if (a.ok) {
        printf("ledger %s: verified: %zu lines, %zu charges; every hash link, signature "
               "(identity key %s), seq and recomputed epsilon checks\n",
               path, a.st.lines, a.st.charges, pub.sign_z85);
        if (a.n) {
            const fl_ledger_charge *l = &a.ch[a.n - 1];
            printf("epsilon spent: %.4f of the cap %g at delta %g (%s accountant, %llu "
                   "DP-SGD steps)\n", l->epsilon, l->epsilon_max, l->delta,
                   fl_accountant_name(l->accountant), (unsigned long long)l->total_steps);
        }
        for (size_t i = 0; i < a.num_recovered; i++)
            printf("note: line %zu was torn by a crash during an append and is followed by "
                   "the node's signed recovery record; no update left the node for it\n",
                   a.recovered[i]);
        printf("head: %s  (note it down; 'flaudit verify --anchor %s' later detects lines "
               "removed from the end or a rewritten history)\n", a.head, a.head);
    }
    if (!a.ok)
        s_print_failure("verify", &a);
    c = a.ok ? 0 : S_EXIT_FAIL;
    s_audit_free(&a);
    return c;
}

/* ------------------------------------------------------------- report */

typedef struct {
    size_t first, last; /* charge indices, inclusive */
    uint64_t steps;
    uint64_t n_min, n_max;
    double eps_before;
} s_session;

/* Consecutive charges with the same consortium, q, sigma and clip norm: the
 * rounds of one training session (flnode plans sigma once per session). */
static size_t s_sessions(const fl_ledger_charge *ch, size_t n, s_session *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m == 0 || strcmp(ch[i].consortium, ch[i - 1].consortium) != 0 ||
            ch[i].q != ch[i - 1].q || ch[i].sigma != ch[i - 1].sigma ||
            ch[i].clip != ch[i - 1].clip) {
            out[m].first = i;
            out[m].steps = 0;
            out[m].n_min = out[m].n_max = ch[i].dataset_size;
            out[m].eps_before = i ? ch[i - 1].epsilon : 0.0;
            m++;
        }
        out[m - 1].last = i;
        out[m - 1].steps += ch[i].steps;
        if (ch[i].dataset_size < out[m - 1].n_min)
            out[m - 1].n_min = ch[i].dataset_size;
        if (ch[i].dataset_size > out[m - 1].n_max)
            out[m - 1].n_max = ch[i].dataset_size;
    }
    return m;
}

/* Index of the session holding charge i. */
static size_t s_session_of(const s_session *s, size_t m, size_t i)
{
    for (size_t k = 0; k < m; k++)
        if (i >= s[k].first && i <= s[k].last)
            return k;
    return 0;
}

/* A table of text cells printed with aligned columns. */
#define S_MAX_COLS 16
typedef struct {
    size_t cols, rows, cap;
    char **cells; /* rows x cols, row 0 is the header */
    int right[S_MAX_COLS];
} s_table;

static int s_table_row(s_table *t, ...)
{
    va_list ap;
    if (t->rows == t->cap) {
        size_t nc = t->cap ? 2 * t->cap : 16;
        char **g = realloc(t->cells, nc * t->cols * sizeof *g);
        if (!g)
            return -1;
        t->cells = g;
        t->cap = nc;
    }
    va_start(ap, t);
    for (size_t c = 0; c < t->cols; c++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->rows * t->cols + c] = strdup(s ? s : "");
    }
    va_end(ap);
    t->rows++;
    return 0;
}

static void s_table_print(const s_table *t, FILE *f, const char *indent)
{
    size_t w[S_MAX_COLS] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (size_t c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * t->cols + c];
            size_t l = s ? strlen(s) : 0;
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->rows; r++) {
        fputs(indent, f);
        for (size_t c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * t->cols + c];
            int last = c + 1 == t->cols;
            if (!s)
                s = "";
            if (t->right[c] && r > 0)
                fprintf(f, "%*s%s", (int)w[c], s, last ? "" : "  ");
            else if (last)
                fputs(s, f);
            else
                fprintf(f, "%-*s  ", (int)w[c], s);
        }
        fputc('\n', f);
    }
}

static void s_table_free(s_table *t)
{
    for (size_t i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
}

/* The cells of one session, shared by the text and HTML tables. */
typedef struct {
    char idx[24], first[32], last[32], rounds[32], range[48], steps[24], q[32], sigma[32],
        clip[32], n[48], eps[32];
} s_session_cells;

static void s_session_fmt(const fl_ledger_charge *ch, const s_session *s, size_t k,
                          s_session_cells *o)
{
    const fl_ledger_charge *a = &ch[s->first], *b = &ch[s->last];
    snprintf(o->idx, sizeof o->idx, "%zu", k + 1);
    s_fmt_time(o->first, sizeof o->first, a->time);
    s_fmt_time(o->last, sizeof o->last, b->time);
    snprintf(o->rounds, sizeof o->rounds, "%zu", s->last - s->first + 1);
    snprintf(o->range, sizeof o->range, "%u..%u", a->round, b->round);
    snprintf(o->steps, sizeof o->steps, "%llu", (unsigned long long)s->steps);
    snprintf(o->q, sizeof o->q, "%.6g", a->q);
    snprintf(o->sigma, sizeof o->sigma, "%.6g", a->sigma);
    snprintf(o->clip, sizeof o->clip, "%.6g", a->clip);
    if (s->n_min == s->n_max)
        snprintf(o->n, sizeof o->n, "%llu", (unsigned long long)s->n_min);
    else
        snprintf(o->n, sizeof o->n, "%llu-%llu", (unsigned long long)s->n_min,
                 (unsigned long long)s->n_max);
    snprintf(o->eps, sizeof o->eps, "%.4f", b->epsilon);
}

static const char *s_verified_text(const s_audit *a)
{
    return a->signatures ? "yes: every hash link, signature, seq and recomputed epsilon checks"
                         : "signatures NOT checked (no --key given); hash chain, seq and "
                           "recomputed epsilon check";
}

static int s_report_text(FILE *f, const s_audit *a, const s_session *s, size_t m,
                         const char *key_z85)
{
    s_table t = {.cols = 12};
    int rc = 0;

    fprintf(f, "Privacy ledger %s", a->path);
    if (a->n)
        fprintf(f, " (node %s)", a->ch[0].node);
    fprintf(f, "\nVerified: %s", s_verified_text(a));
    if (key_z85)
        fprintf(f, " (identity key %s)", key_z85);
    fputc('\n', f);
    for (size_t i = 0; i < a->num_recovered; i++)
        fprintf(f, "Note: line %zu was torn by a crash and recovered by the node\n",
                a->recovered[i]);
    if (!a->n) {
        fprintf(f, "\nNo privacy has been spent: the ledger records no charges.\n");
        return 0;
    }
    fprintf(f, "\nTraining sessions\n");
    for (int c = 0; c < 12; c++)
        t.right[c] = c == 0 || c >= 4;
    rc |= s_table_row(&t, "#", "consortium", "first (UTC)", "last (UTC)", "rounds", "round#",
                      "steps", "q", "sigma", "C", "records", "epsilon after");
    for (size_t k = 0; k < m; k++) {
        s_session_cells o;
        s_session_fmt(a->ch, &s[k], k, &o);
        rc |= s_table_row(&t, o.idx, a->ch[s[k].first].consortium, o.first, o.last, o.rounds,
                          o.range, o.steps, o.q, o.sigma, o.clip, o.n, o.eps);
    }
    if (rc == 0)
        s_table_print(&t, f, "  ");
    s_table_free(&t);
    {
        const fl_ledger_charge *l = &a->ch[a->n - 1];
        double rem = fmax(l->epsilon_max - l->epsilon, 0.0);
        fprintf(f, "\nBudget (delta %g, %s accountant, %zu charges, %llu DP-SGD steps)\n"
                   "  cap        %.4f\n  spent      %.4f  (%.1f%%)\n  remaining  %.4f\n",
                l->delta, fl_accountant_name(l->accountant), a->n,
                (unsigned long long)l->total_steps, l->epsilon_max, l->epsilon,
                100.0 * l->epsilon / l->epsilon_max, rem);
    }
    return rc ? -1 : 0;
}

static void s_report_json(FILE *f, const s_audit *a, const s_session *s, size_t m)
{
    char t[32];
    int first = 1;
    fputc('{', f);
    s_jk(f, &first, "ledger");
    s_json_str(f, a->path);
    s_jk(f, &first, "node");
    if (a->n)
        s_json_str(f, a->ch[0].node);
    else
        fputs("null", f);
    s_jk(f, &first, "verified");
    fputs(a->signatures ? "true" : "null", f);
    s_jk(f, &first, "verification");
    s_json_str(f, s_verified_text(a));
    s_jk(f, &first, "recovered_lines");
    fputc('[', f);
    for (size_t i = 0; i < a->num_recovered; i++)
        fprintf(f, "%s%zu", i ? "," : "", a->recovered[i]);
    fputc(']', f);
    s_jk(f, &first, "sessions");
    fputc('[', f);
    for (size_t k = 0; k < m; k++) {
        const fl_ledger_charge *c0 = &a->ch[s[k].first], *c1 = &a->ch[s[k].last];
        int fs = 1;
        fputs(k ? ",{" : "{", f);
        s_jk(f, &fs, "session");
        fprintf(f, "%zu", k + 1);
        s_jk(f, &fs, "consortium");
        s_json_str(f, c0->consortium);
        s_jk(f, &fs, "first_time");
        s_fmt_time(t, sizeof t, c0->time);
        s_json_str(f, t);
        s_jk(f, &fs, "last_time");
        s_fmt_time(t, sizeof t, c1->time);
        s_json_str(f, t);
        s_jk(f, &fs, "first_seq");
        fprintf(f, "%llu", (unsigned long long)c0->seq);
        s_jk(f, &fs, "last_seq");
        fprintf(f, "%llu", (unsigned long long)c1->seq);
        s_jk(f, &fs, "rounds");
        fprintf(f, "%zu", s[k].last - s[k].first + 1);
        s_jk(f, &fs, "first_round");
        fprintf(f, "%u", c0->round);
        s_jk(f, &fs, "last_round");
        fprintf(f, "%u", c1->round);
        s_jk(f, &fs, "steps");
        fprintf(f, "%llu", (unsigned long long)s[k].steps);
        s_jk(f, &fs, "q");
        s_json_num(f, c0->q);
        s_jk(f, &fs, "sigma");
        s_json_num(f, c0->sigma);
        s_jk(f, &fs, "clip");
        s_json_num(f, c0->clip);
        s_jk(f, &fs, "dataset_size");
        fprintf(f, "%llu", (unsigned long long)c1->dataset_size);
        s_jk(f, &fs, "dataset_size_min");
        fprintf(f, "%llu", (unsigned long long)s[k].n_min);
        s_jk(f, &fs, "dataset_size_max");
        fprintf(f, "%llu", (unsigned long long)s[k].n_max);
        s_jk(f, &fs, "epsilon_before");
        s_json_num(f, s[k].eps_before);
        s_jk(f, &fs, "epsilon_after");
        s_json_num(f, c1->epsilon);
        fputc('}', f);
    }
    fputc(']', f);
    s_jk(f, &first, "charges");
    fputc('[', f);
    for (size_t i = 0; i < a->n; i++) {
        const fl_ledger_charge *c = &a->ch[i];
        int fs = 1;
        fputs(i ? ",{" : "{", f);
        s_jk(f, &fs, "seq");
        fprintf(f, "%llu", (unsigned long long)c->seq);
        s_jk(f, &fs, "time");
        s_fmt_time(t, sizeof t, c->time);
        s_json_str(f, t);
        s_jk(f, &fs, "node");
        s_json_str(f, c->node);
        s_jk(f, &fs, "consortium");
        s_json_str(f, c->consortium);
        s_jk(f, &fs, "round");
        fprintf(f, "%u", c->round);
        s_jk(f, &fs, "accountant");
        s_json_str(f, fl_accountant_name(c->accountant));
        s_jk(f, &fs, "q");
        s_json_num(f, c->q);
        s_jk(f, &fs, "sigma");
        s_json_num(f, c->sigma);
        s_jk(f, &fs, "clip");
        s_json_num(f, c->clip);
        s_jk(f, &fs, "steps");
        fprintf(f, "%llu", (unsigned long long)c->steps);
        s_jk(f, &fs, "dataset_size");
        fprintf(f, "%llu", (unsigned long long)c->dataset_size);
        s_jk(f, &fs, "total_steps");
        fprintf(f, "%llu", (unsigned long long)c->total_steps);
        s_jk(f, &fs, "delta");
        s_json_num(f, c->delta);
        s_jk(f, &fs, "epsilon");
        s_json_num(f, c->epsilon);
        s_jk(f, &fs, "epsilon_max");
        s_json_num(f, c->epsilon_max);
        s_jk(f, &fs, "session");
        fprintf(f, "%zu", s_session_of(s, m, i) + 1);
        fputc('}', f);
    }
    fputc(']', f);
    s_jk(f, &first, "budget");
    if (a->n) {
        const fl_ledger_charge *l = &a->ch[a->n - 1];
        int fs = 1;
        fputc('{', f);
        s_jk(f, &fs, "cap");
        s_json_num(f, l->epsilon_max);
        s_jk(f, &fs, "spent");
        s_json_num(f, l->epsilon);
        s_jk(f, &fs, "remaining");
        s_json_num(f, fmax(l->epsilon_max - l->epsilon, 0.0));
        s_jk(f, &fs, "delta");
        s_json_num(f, l->delta);
        s_jk(f, &fs, "accountant");
        s_json_str(f, fl_accountant_name(l->accountant));
        s_jk(f, &fs, "charges");
        fprintf(f, "%zu", a->n);
        s_jk(f, &fs, "total_steps");
        fprintf(f, "%llu", (unsigned long long)l->total_steps);
        fputc('}', f);
    } else {
        fputs("{\"cap\":null,\"spent\":0,\"remaining\":null,\"delta\":null,\"accountant\":null,"
              "\"charges\":0,\"total_steps\":0}", f);
    }
    fputs("}\n", f);
}

static void s_report_csv(FILE *f, const s_audit *a, const s_session *s, size_t m)
{
    char t[32], b[40];
    fputs("seq,time,node,consortium,round,accountant,q,sigma,clip,steps,dataset_size,"
          "total_steps,delta,epsilon,epsilon_max,session,verified\n", f);
    for (size_t i = 0; i < a->n; i++) {
        const fl_ledger_charge *c = &a->ch[i];
        s_fmt_time(t, sizeof t, c->time);
        fprintf(f, "%llu,%s,", (unsigned long long)c->seq, t);
        s_csv(f, c->node);
        fputc(',', f);
        s_csv(f, c->consortium);
        fprintf(f, ",%u,%s,", c->round, fl_accountant_name(c->accountant));
        s_fmt_num(b, sizeof b, c->q);
        fprintf(f, "%s,", b);
        s_fmt_num(b, sizeof b, c->sigma);
        fprintf(f, "%s,", b);
        s_fmt_num(b, sizeof b, c->clip);
        fprintf(f, "%s,%llu,%llu,%llu,", b, (unsigned long long)c->steps,
                (unsigned long long)c->dataset_size, (unsigned long long)c->total_steps);
        s_fmt_num(b, sizeof b, c->delta);
        fprintf(f, "%s,", b);
        s_fmt_num(b, sizeof b, c->epsilon);
        fprintf(f, "%s,", b);
        s_fmt_num(b, sizeof b, c->epsilon_max);
        fprintf(f, "%s,%zu,%s\n", b, s_session_of(s, m, i) + 1,
                a->signatures ? "yes" : "not checked");
    }
}

/* A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) for ~n ticks. */
static double s_nice_step(double span, int n)
{
    double raw = span / n, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return (m <= 1.0 ? 1.0 : m <= 2.0 ? 2.0 : m <= 2.5 ? 2.5 : m <= 5.0 ? 5.0 : 10.0) * p;
}

/*
 * The chart: cumulative epsilon (y) against charge time (x) as a step
 * curve — epsilon is constant between charges and rises at the time each
 * charge was recorded (before that round's training) — with the cap as a
 * dashed line.  Inline SVG, no script, so it renders anywhere.
 */
static void s_report_svg(FILE *f, const s_audit *a)
{
    const double W = 900, H = 400, L = 80, R = 30, T = 24, B = 70;
    const double pw = W - L - R, ph = H - T - B;
    const fl_ledger_charge *l = &a->ch[a->n - 1];
    double t0 = (double)a->ch[0].time, t1 = (double)l->time, ymax, ystep, pad;
    char buf[64];

    pad = (t1 - t0) * 0.03;
    if (t1 <= t0)
        pad = 30; /* all charges in one second: centre them in a minute */
    t0 -= pad;
    t1 += pad;
    ymax = fmax(l->epsilon_max, l->epsilon) * 1.1;
    ystep = s_nice_step(ymax, 5);
    ymax = ceil(ymax / ystep) * ystep;
#define S_X(t) (L + ((double)(t) - t0) / (t1 - t0) * pw)
#define S_Y(e) (T + ph - (e) / ymax * ph)
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"cumulative epsilon over "
               "time\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fff\" "
               "stroke=\"#999\"/>\n", L, T, pw, ph);
    /* y ticks and grid */
    for (double v = 0; v <= ymax + ystep * 1e-9; v += ystep) {
        double y = S_Y(v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>"
                   "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L, y, L + pw, y, L - 5, y, L, y, L - 8, y + 4, v);
    }
    /* x ticks at whole seconds, minutes, hours or days: at most 6 */
    {
        static const double steps[] = {1,     2,     5,     10,     15,     30,     60,
                                       120,   300,   600,   900,    1800,   3600,   7200,
                                       10800, 21600, 43200, 86400,  172800, 604800, 2592000,
                                       7776000, 31536000};
        double step = steps[sizeof steps / sizeof steps[0] - 1];
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
            if ((t1 - t0) / steps[i] <= 6.0) {
                step = steps[i];
                break;
            }
        for (double tt = ceil(t0 / step) * step; tt <= t1; tt += step) {
            double x = S_X(tt);
            time_t tm_t = (time_t)tt;
            struct tm tm;
            char d[16], h[16];
            gmtime_r(&tm_t, &tm);
            strftime(d, sizeof d, "%Y-%m-%d", &tm);
            strftime(h, sizeof h, step < 60 ? "%H:%M:%S" : "%H:%M", &tm);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s",
                    x, T + ph, x, T + ph + 5, x, T + ph + 18, d);
            if (step < 86400)
                fprintf(f, "<tspan x=\"%.1f\" dy=\"14\">%s</tspan>", x, h);
            fputs("</text>\n", f);
        }
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">charge "
               "time (UTC)</text>\n", L + pw / 2, H - 8);
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" "
               "font-size=\"13\">cumulative epsilon (delta = %g)</text>\n",
            T + ph / 2, l->delta);
    /* the cap */
    fprintf(f, "<line id=\"epsilon-cap\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
               "stroke=\"#444\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/>\n"
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#444\">cap epsilon = "
               "%g</text>\n",
            L, S_Y(l->epsilon_max), L + pw, S_Y(l->epsilon_max), L + pw - 6,
            S_Y(l->epsilon_max) - 6, l->epsilon_max);
    /* the curve: 0 before the first charge, a step at each charge */
    fprintf(f, "<polyline id=\"epsilon-curve\" fill=\"none\" stroke=\"%s\" stroke-width=\"3\" "
               "stroke-linejoin=\"round\" points=\"%.1f,%.1f",
            S_CURVE_COLOUR, L, S_Y(0.0));
    for (size_t i = 0; i < a->n; i++) {
        double x = S_X(a->ch[i].time);
        fprintf(f, " %.1f,%.1f %.1f,%.1f", x, S_Y(i ? a->ch[i - 1].epsilon : 0.0), x,
                S_Y(a->ch[i].epsilon));
    }
    fprintf(f, " %.1f,%.1f\"/>\n", L + pw, S_Y(l->epsilon));
    for (size_t i = 0; i < a->n; i++) {
        s_fmt_time(buf, sizeof buf, a->ch[i].time);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>charge %llu, "
                   "round %u, %s: epsilon %.4f</title></circle>\n",
                S_X(a->ch[i].time), S_Y(a->ch[i].epsilon), S_CURVE_COLOUR,
                (unsigned long long)a->ch[i].seq, a->ch[i].round, buf, a->ch[i].epsilon);
    }
    /* legend */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
               "stroke-width=\"3\"/><text x=\"%.1f\" y=\"%.1f\">epsilon spent</text>\n"
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" "
               "stroke-width=\"2\" stroke-dasharray=\"8 5\"/><text x=\"%.1f\" y=\"%.1f\">"
               "cap</text>\n",
            L + 12, T + 16, L + 42, T + 16, S_CURVE_COLOUR, L + 48, T + 20, L + 150, T + 16,
            L + 180, T + 16, L + 186, T + 20);
    fputs("</svg>\n", f);
#undef S_X
#undef S_Y
}

static void s_report_html(FILE *f, const s_audit *a, const s_session *s, size_t m,
                          const char *key_z85)
{
    char b[64];
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>"
          "Privacy ledger report: ", f);
    s_html(f, a->path);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}\n"
          "h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:22px 0 6px}\n"
          "table{border-collapse:collapse;font-size:13px}\n"
          "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
          "th{background:#f2f2f2}td.l,th.l{text-align:left}\n"
          ".ok{color:#1a7f37;font-weight:bold}.warn{color:#9a6700;font-weight:bold}\n"
          ".budget td{text-align:left}\n"
          "</style>\n</head>\n<body>\n<h1>Privacy ledger report</h1>\n<p>Ledger <code>", f);
    s_html(f, a->path);
    fputs("</code>", f);
    if (a->n) {
        fputs(", node <b>", f);
        s_html(f, a->ch[0].node);
        fputs("</b>", f);
    }
    fputs(".</p>\n<p>Verified: ", f);
    fprintf(f, "<span class=\"%s\">", a->signatures ? "ok" : "warn");
    s_html(f, s_verified_text(a));
    fputs("</span>", f);
    if (key_z85) {
        fputs(" (identity key <code>", f);
        s_html(f, key_z85);
        fputs("</code>)", f);
    }
    fputs(".</p>\n", f);
    for (size_t i = 0; i < a->num_recovered; i++)
        fprintf(f, "<p>Note: line %zu was torn by a crash and recovered by the node.</p>\n",
                a->recovered[i]);
    if (!a->n) {
        fputs("<p>No privacy has been spent: the ledger records no charges.</p>\n"
              "</body>\n</html>\n", f);
        return;
    }
    {
        const fl_ledger_charge *l = &a->ch[a->n - 1];
        fputs("<h2>Budget</h2>\n<table class=\"budget\">\n", f);
        fprintf(f, "<tr><th class=\"l\">cap (epsilon_max)</th><td>%.4f</td></tr>\n"
                   "<tr><th class=\"l\">spent</th><td>%.4f (%.1f%%)</td></tr>\n"
                   "<tr><th class=\"l\">remaining</th><td>%.4f</td></tr>\n"
                   "<tr><th class=\"l\">delta</th><td>%g</td></tr>\n"
                   "<tr><th class=\"l\">accountant</th><td>%s</td></tr>\n"
                   "<tr><th class=\"l\">charges / DP-SGD steps</th><td>%zu / %llu</td></tr>\n"
                   "</table>\n",
                l->epsilon_max, l->epsilon, 100.0 * l->epsilon / l->epsilon_max,
                fmax(l->epsilon_max - l->epsilon, 0.0), l->delta,
                fl_accountant_name(l->accountant), a->n, (unsigned long long)l->total_steps);
    }
    fputs("<h2>Cumulative epsilon</h2>\n", f);
    s_report_svg(f, a);
    fputs("<h2>Training sessions</h2>\n<table>\n<tr><th>#</th><th class=\"l\">consortium</th>"
          "<th class=\"l\">first (UTC)</th><th class=\"l\">last (UTC)</th><th>rounds</th>"
          "<th>round#</th><th>steps</th><th>q</th><th>sigma</th><th>C</th><th>records</th>"
          "<th>epsilon after</th></tr>\n", f);
    for (size_t k = 0; k < m; k++) {
        s_session_cells o;
        const char *cells[12];
        s_session_fmt(a->ch, &s[k], k, &o);
        cells[0] = o.idx;
        cells[1] = a->ch[s[k].first].consortium;
        cells[2] = o.first;
        cells[3] = o.last;
        cells[4] = o.rounds;
        cells[5] = o.range;
        cells[6] = o.steps;
        cells[7] = o.q;
        cells[8] = o.sigma;
        cells[9] = o.clip;
        cells[10] = o.n;
        cells[11] = o.eps;
        fputs("<tr>", f);
        for (int c = 0; c < 12; c++) {
            fputs(c >= 1 && c <= 3 ? "<td class=\"l\">" : "<td>", f);
            s_html(f, cells[c]);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table>\n<h2>Charges</h2>\n<table>\n<tr><th>seq</th><th class=\"l\">time (UTC)"
          "</th><th class=\"l\">consortium</th><th>round</th><th>steps</th><th>q</th>"
          "<th>sigma</th><th>C</th><th>records</th><th>epsilon</th><th>cap</th>"
          "<th>session</th></tr>\n", f);
    for (size_t i = 0; i < a->n; i++) {
        const fl_ledger_charge *c = &a->ch[i];
        s_fmt_time(b, sizeof b, c->time);
        fprintf(f, "<tr><td>%llu</td><td class=\"l\">", (unsigned long long)c->seq);
        s_html(f, b);
        fputs("</td><td class=\"l\">", f);
        s_html(f, c->consortium);
        fprintf(f, "</td><td>%u</td><td>%llu</td><td>%.6g</td><td>%.6g</td><td>%.6g</td>"
                   "<td>%llu</td><td>%.4f</td><td>%g</td><td>%zu</td></tr>\n",
                c->round, (unsigned long long)c->steps, c->q, c->sigma, c->clip,
                (unsigned long long)c->dataset_size, c->epsilon, c->epsilon_max,
                s_session_of(s, m, i) + 1);
    }
    fputs("</table>\n<p>Epsilon is cumulative over all charges, composed by the accountant "
          "named above; each charge is recorded before its round's training starts.</p>\n"
          "</body>\n</html>\n", f);
}

static int s_cmd_report(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, 0, S_OPT_KEY},
                                         {"json", no_argument, 0, S_OPT_JSON},
                                         {"csv", no_argument, 0, S_OPT_CSV},
                                         {"html", required_argument, 0, S_OPT_HTML},
                                         {"help", no_argument, 0, S_OPT_HELP},
                                         {0, 0, 0, 0}};
    const char *key = NULL, *html = NULL, *path;
    fl_identity_public pub;
    int json = 0, csv = 0, c, code = S_EXIT_FAIL;
    s_session *s = NULL;
    size_t m = 0;
    s_audit a;

    optind = 2;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case S_OPT_KEY: key = optarg; break;
        case S_OPT_JSON: json = 1; break;
        case S_OPT_CSV: csv = 1; break;
        case S_OPT_HTML: html = optarg; break;
        case S_OPT_HELP: fputs(S_USAGE_REPORT, stdout); return 0;
        default:
            return s_usage_error("report", S_USAGE_REPORT, "unknown or incomplete option '%s'",
                                 argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return s_usage_error("report", S_USAGE_REPORT, "%s", "LEDGER is required");
    if (optind + 1 < argc)
        return s_usage_error("report", S_USAGE_REPORT, "unexpected argument '%s'",
                             argv[optind + 1]);
    if (json + csv + (html != NULL) > 1)
        return s_usage_error("report", S_USAGE_REPORT, "%s",
                             "choose one of --json, --csv and --html FILE");
    path = argv[optind];
    if (key && s_load_key("report", key, &pub) != 0)
        return S_EXIT_FAIL;
    s_audit_run(&a, path, key ? pub.sign_pk : NULL, NULL, NULL);
    if (!a.ok) {
        s_print_failure("report", &a);
        if (!a.io_error)
            fprintf(stderr, "flaudit report: not reporting a ledger that fails verification; "
                    "see 'flaudit verify'\n");
        goto done;
    }
    s = calloc(a.n ? a.n : 1, sizeof *s);
    if (!s) {
        fprintf(stderr, "flaudit report: out of memory\n");
        goto done;
    }
    m = s_sessions(a.ch, a.n, s);
    if (json) {
        s_report_json(stdout, &a, s, m);
    } else if (csv) {
        s_report_csv(stdout, &a, s, m);
    } else if (html) {
        char *doc = NULL;
        size_t len = 0;
        FILE *mf = open_memstream(&doc, &len);
        if (!mf) {
            fprintf(stderr, "flaudit report: out of memory\n");
            goto done;
        }
        s_report_html(mf, &a, s, m, key ? pub.sign_z85 : NULL);
        if (fclose(mf) != 0) {
            free(doc);
            fprintf(stderr, "flaudit report: out of memory\n");
            goto done;
        }
        if (fl_storage_write_atomic(html, doc, len, 0644) != FL_OK) {
            free(doc);
            fprintf(stderr, "flaudit report: %s\n", fl_error_last());
            goto done;
        }
        free(doc);
        printf("wrote %s: %zu sessions, %zu charges, ledger %s\n", html, m, a.n,
               a.signatures ? "verified" : "signatures not checked (no --key)");
    } else if (s_report_text(stdout, &a, s, m, key ? pub.sign_z85 : NULL) != 0) {
        fprintf(stderr, "flaudit report: out of memory\n");
        goto done;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "flaudit report: cannot write the report: %s\n", strerror(errno));
        goto done;
    }
    code = 0;
done:
    free(s);
    s_audit_free(&a);
    return code;
}

/* --------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    const char *cmd;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(S_USAGE_MAIN, stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("flaudit 0.1.0\n");
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        fputs(S_USAGE_MAIN, stderr);
        return S_EXIT_USAGE;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "flaudit: libsodium failed to initialise\n");
        return S_EXIT_FAIL;
    }
    fl_log_init("flaudit", FL_LOG_INFO);
    cmd = argv[1];
    if (strcmp(cmd, "epsilon") == 0)
        return s_cmd_epsilon(argc, argv, 0);
    if (strcmp(cmd, "calibrate") == 0)
        return s_cmd_epsilon(argc, argv, 1);
    if (strcmp(cmd, "verify") == 0)
        return s_cmd_verify(argc, argv);
    if (strcmp(cmd, "report") == 0)
        return s_cmd_report(argc, argv);
    fprintf(stderr, "flaudit: unknown command '%s' (try --help)\n\n%s", cmd, S_USAGE_MAIN);
    return S_EXIT_USAGE;
}
