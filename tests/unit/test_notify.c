/*
 * Unit and integration tests for notify, against a fake outbox (the store's
 * outbox calls are replaced by an in-memory table defined here, so the
 * durability rules can be checked row by row) and against real SMTP
 * servers on loopback: a small scriptable SMTP sink running on a thread of
 * this test (so the fault cases also run under valgrind and TSan), and
 * Debian's aiosmtpd as a child process for one end-to-end delivery.
 *
 * Covered: the mbox default (written, then parsed back with mboxrd
 * unquoting), coalescing into one e-mail per recipient, the queue bound and
 * duplicate ids, pickup of pending outbox rows at start and after a full
 * queue, the late outbox insert race, delivery with the right headers and
 * envelope, a relay that is down and comes back (delivered exactly once), a
 * relay refusing forever (dead after max_attempts, counted, marked), the
 * breaker opening and holding, and a prompt shutdown while the relay hangs.
 *
 * Every wait is a bounded poll on a condition; nothing depends on how long
 * anything takes.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include "testutil.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#include "breaker.h"
#include "notify.h"

#define WAIT_MS 60000 /* generous: valgrind is slow; a pass never waits this long */

/* ---- bounded waiting ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
    struct timespec ts = {0, 2 * 1000000};
    nanosleep(&ts, NULL);
}

#define WAIT_FOR(cond, ...)                                                                        \
    do {                                                                                           \
        int64_t wait_end_ = mono_ms() + WAIT_MS;                                                   \
        while (!(cond) && mono_ms() < wait_end_)                                                   \
            nap();                                                                                 \
        cr_assert(cond, __VA_ARGS__);                                                              \
    } while (0)

static struct notify_stats stats_of(notify_t *n)
{
    struct notify_stats s;
    notify_stats(n, &s);
    return s;
}

/* ---- the fake outbox (replaces the store's outbox calls) ---- */

struct fake_row {
    struct store_outbox_row r;
    char state[8];
    int marks; /* how often store_outbox_mark touched it */
};

struct store {
    pthread_mutex_t lock;
    struct fake_row rows[64];
    size_t n;
    int pending_calls;
};

static struct store fake = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void fake_reset(void)
{
    pthread_mutex_lock(&fake.lock);
    for (size_t i = 0; i < fake.n; i++)
        free(fake.rows[i].r.text);
    fake.n = 0;
    fake.pending_calls = 0;
    pthread_mutex_unlock(&fake.lock);
}

static void fake_add(const char *id, const char *recipient, const char *email, const char *kind,
                     const char *from, const char *room, const char *text, int attempts)
{
    pthread_mutex_lock(&fake.lock);
    cr_assert(fake.n < 64);
    struct fake_row *f = &fake.rows[fake.n++];
    memset(f, 0, sizeof(*f));
    snprintf(f->r.id, sizeof(f->r.id), "%s", id);
    snprintf(f->r.recipient, sizeof(f->r.recipient), "%s", recipient);
    snprintf(f->r.email, sizeof(f->r.email), "%s", email);
    snprintf(f->r.kind, sizeof(f->r.kind), "%s", kind);
    snprintf(f->r.from, sizeof(f->r.from), "%s", from);
    snprintf(f->r.room, sizeof(f->r.room), "%s", room);
    f->r.text = strdup(text);
    f->r.ts = 1795449600000LL;
    f->r.attempts = attempts;
    strcpy(f->state, "pending");
    pthread_mutex_unlock(&fake.lock);
}

/* state and attempts of a row, by id; false if absent */
static bool fake_get(const char *id, char state[8], int *attempts, int *marks)
{
    bool found = false;
    pthread_mutex_lock(&fake.lock);
    for (size_t i = 0; i < fake.n; i++) {
        if (strcmp(fake.rows[i].r.id, id) == 0) {
            memcpy(state, fake.rows[i].state, 8);
            if (attempts)
                *attempts = fake.rows[i].r.attempts;
            if (marks)
                *marks = fake.rows[i].marks;
            found = true;
        }
    }
    pthread_mutex_unlock(&fake.lock);
    return found;
}

static bool fake_state_is(const char *id, const char *state)
{
    char s[8];
    return fake_get(id, s, NULL, NULL) && strcmp(s, state) == 0;
}

static int fake_pending_calls(void)
{
    pthread_mutex_lock(&fake.lock);
    int c = fake.pending_calls;
    pthread_mutex_unlock(&fake.lock);
    return c;
}

int store_outbox_pending(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                         size_t *n)
{
    cr_assert_eq(s, &fake);
    pthread_mutex_lock(&s->lock);
    s->pending_calls++;
    struct store_outbox_row *out = calloc(s->n ? s->n : 1, sizeof(*out));
    size_t k = 0;
    for (size_t i = 0; i < s->n && k < max; i++) {
        struct fake_row *f = &s->rows[i];
        if (strcmp(f->state, "pending") != 0 || f->r.next_at_ms > now_ms)
            continue;
        out[k] = f->r;
        out[k].text = strdup(f->r.text);
        k++;
    }
    pthread_mutex_unlock(&s->lock);
    *rows = out;
    *n = k;
    return 0;
}

void store_outbox_rows_free(struct store_outbox_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].text);
    free(rows);
}

/* Like the real store: rows are marked in order and the first id with no
 * row ends the call with -ENOENT (the rows after it stay unmarked). */
int store_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state, int attempts,
                      int64_t next_at_ms)
{
    cr_assert_eq(s, &fake);
    cr_assert(strcmp(state, "sent") == 0 || strcmp(state, "pending") == 0 ||
              strcmp(state, "dead") == 0);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t j = 0; j < n && rc == 0; j++) {
        rc = -ENOENT;
        for (size_t i = 0; i < s->n; i++) {
            struct fake_row *f = &s->rows[i];
            if (strcmp(f->r.id, ids[j]) == 0) {
                snprintf(f->state, sizeof(f->state), "%s", state);
                f->r.attempts = attempts;
                f->r.next_at_ms = next_at_ms;
                f->marks++;
                rc = 0;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- temp dir and files ---- */

static char tmpdir[4096];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof(tmpdir), "notifytest");
    fake_reset();
}

static pid_t smtpd_pid; /* aiosmtpd child, stopped here even if a test fails */

static void teardown(void)
{
    if (smtpd_pid > 0) {
        kill(smtpd_pid, SIGTERM);
        waitpid(smtpd_pid, NULL, 0);
        smtpd_pid = 0;
    }
    test_rmtree(tmpdir);
    fake_reset();
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (cap + 4096) * 2;
            buf = realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* ---- decoding what arrives ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode a quoted-printable body whose lines end in "\n" or "\r\n". */
static char *qp_decode(const char *s)
{
    size_t len = strlen(s), n = 0;
    char *out = malloc(len + 1);
    for (size_t i = 0; i < len;) {
        if (s[i] == '=' && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 3;
        } else if (s[i] == '=' && s[i + 1] == '\n') {
            i += 2;
        } else if (s[i] == '=' && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 3;
        } else if (s[i] == '\r' && s[i + 1] == '\n') {
            out[n++] = '\n';
            i += 2;
        } else {
            out[n++] = s[i++];
        }
    }
    out[n] = '\0';
    return out;
}

struct mail {
    char *headers; /* lines ending "\n" (CRs removed) */
    char *body;    /* decoded */
};

static void mail_parse(struct mail *m, const char *raw)
{
    char *flat = malloc(strlen(raw) + 1);
    size_t n = 0;
    for (const char *p = raw; *p; p++) {
        if (!(p[0] == '\r' && p[1] == '\n'))
            flat[n++] = *p;
    }
    flat[n] = '\0';
    char *sep = strstr(flat, "\n\n");
    cr_assert_not_null(sep, "no end of headers in:\n%s", raw);
    m->headers = strndup(flat, (size_t)(sep - flat) + 1);
    m->body = qp_decode(sep + 2);
    free(flat);
}

static void mail_release(struct mail *m)
{
    free(m->headers);
    free(m->body);
}

/* A header line equal to line, or (prefix) starting with it. */
static bool header_match(const struct mail *m, const char *line, bool prefix)
{
    size_t k = strlen(line);
    for (const char *p = m->headers; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, k) == 0 && (prefix || p[k] == '\n'))
            return true;
    }
    return false;
}

static bool has_header(const struct mail *m, const char *line)
{
    return header_match(m, line, false);
}

/* Split an mboxrd file into its messages (unquoted). Returns the count. */
static size_t mbox_split(char *text, char **msgs, size_t max)
{
    size_t count = 0;
    char *line = text;
    char *cur = NULL;
    size_t cur_len = 0;
    while (*line) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (strncmp(line, "From ", 5) == 0) {
            if (cur && count < max)
                msgs[count++] = cur;
            cur = calloc(1, strlen(text) + 1);
            cur_len = 0;
        } else {
            cr_assert_not_null(cur, "text before the first separator");
            const char *l = line;
            size_t k = 0;
            while (k < len && l[k] == '>')
                k++;
            if (k > 0 && len - k >= 5 && strncmp(l + k, "From ", 5) == 0)
                l++, len--; /* mboxrd: drop one '>' */
            memcpy(cur + cur_len, l, len);
            cur_len += len;
        }
        line += nl ? (size_t)(nl - line) + 1 : strlen(line);
    }
    if (cur && count < max)
        msgs[count++] = cur;
    return count;
}

static struct notification note(const char *id, const char *to, enum notification_kind kind,
                                const char *from, const char *room, const char *text)
{
    struct notification nt;
    memset(&nt, 0, sizeof(nt));
    snprintf(nt.id, sizeof(nt.id), "%s", id);
    snprintf(nt.recipient, sizeof(nt.recipient), "%s", to);
    snprintf(nt.email, sizeof(nt.email), "%s@example.com", to);
    nt.kind = kind;
    snprintf(nt.from, sizeof(nt.from), "%s", from);
    snprintf(nt.room, sizeof(nt.room), "%s", room);
    nt.text = text;
    nt.ts = 1795449600000LL;
    return nt;
}

static void mbox_opts(struct notify_opts *o, char *path, size_t pathsz)
{
    notify_opts_default(o);
    snprintf(path, pathsz, "%s/mail.mbox", tmpdir);
    o->mbox_path = path;
    o->smtp_from = "parley@chat.example.org";
    o->coalesce_ms = 0;
    o->backoff_base_ms = 5;
    o->max_backoff_ms = 20;
}

/* ---- mbox, coalescing, queue ---- */

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 120);

Test(notify, mbox_default_written_and_parsed_back)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.coalesce_ms = 50; /* a short window that must end by itself */
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    struct notification a = note("00000000000000000000000000000001", "alice", NOTE_DM, "bob", "",
                                 "From the shop: caf\xc3\xa9\nFrom here on");
    cr_assert(notify_enqueue(n, &a));
    WAIT_FOR(stats_of(n).sent == 1, "delivered to the mbox");
    struct notify_stats s = stats_of(n);
    cr_expect_eq(s.emails, 1);
    cr_expect_eq(s.queue_depth, 0);
    cr_expect_eq(s.failed, 0);
    notify_free(n);

    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0600, "private mail: mode %o", st.st_mode & 0777);
    char *text = slurp(path, NULL);
    cr_expect_eq(strncmp(text, "From parley@chat.example.org ", 29), 0, "%s", text);
    char *msgs[4];
    size_t count = mbox_split(text, msgs, 4);
    cr_assert_eq(count, 1, "%s", text);
    struct mail m;
    mail_parse(&m, msgs[0]);
    cr_expect(has_header(&m, "To: \"alice\" <alice@example.com>"), "%s", m.headers);
    cr_expect(has_header(&m, "From: parley <parley@chat.example.org>"), "%s", m.headers);
    cr_expect(has_header(&m, "Subject: [parley] Direct message from bob"), "%s", m.headers);
    cr_expect(strstr(m.body, "bob (direct message) at 2026-11-23 16:00:00 UTC: From the shop: "
                             "caf\xc3\xa9\n    From here on\n"),
              "%s", m.body);
    mail_release(&m);
    free(msgs[0]);
    free(text);
}

Test(notify, coalesces_per_recipient)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.coalesce_ms = 3600 * 1000; /* only the flush below ends the window */
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    struct notification list[] = {
        note("a1", "alice", NOTE_MENTION, "bob", "general", "hi @alice"),
        note("b1", "bob", NOTE_DM, "alice", "", "for bob"),
        note("a2", "alice", NOTE_DM, "carol", "", "second"),
        note("a3", "alice", NOTE_MENTION, "dave", "ops", "third @alice"),
    };
    for (size_t i = 0; i < 4; i++)
        cr_assert(notify_enqueue(n, &list[i]));
    cr_expect_eq(stats_of(n).queue_depth, 4);
    cr_expect_eq(stats_of(n).sent, 0, "held for the window");
    notify_flush(n);
    WAIT_FOR(stats_of(n).sent == 4, "all four delivered");
    cr_expect_eq(stats_of(n).emails, 2, "one e-mail per recipient");
    notify_free(n);

    char *text = slurp(path, NULL);
    char *msgs[4];
    size_t count = mbox_split(text, msgs, 4);
    cr_assert_eq(count, 2, "%s", text);
    int alice = -1;
    for (size_t i = 0; i < count; i++) {
        if (strstr(msgs[i], "To: \"alice\""))
            alice = (int)i;
    }
    cr_assert_geq(alice, 0);
    struct mail m;
    mail_parse(&m, msgs[alice]);
    cr_expect(has_header(&m, "Subject: [parley] 3 new messages"), "%s", m.headers);
    const char *p1 = strstr(m.body, "[general] bob at 2026-11-23 16:00:00 UTC: hi @alice\n");
    const char *p2 = strstr(m.body, "carol (direct message) at 2026-11-23 16:00:00 UTC: second\n");
    const char *p3 = strstr(m.body, "[ops] dave at 2026-11-23 16:00:00 UTC: third @alice\n");
    cr_expect(p1 && p2 && p3 && p1 < p2 && p2 < p3, "all three, in order:\n%s", m.body);
    cr_expect(!strstr(m.body, "for bob"));
    mail_release(&m);
    for (size_t i = 0; i < count; i++)
        free(msgs[i]);
    free(text);
}

Test(notify, queue_bound_duplicates_malformed_and_bad_options)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.coalesce_ms = 3600 * 1000;
    o.queue_max = 3;
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    struct notification q[] = {
        note("q1", "alice", NOTE_DM, "bob", "", "1"),
        note("q2", "bob", NOTE_DM, "bob", "", "2"),
        note("q3", "carol", NOTE_DM, "bob", "", "3"),
        note("q4", "dave", NOTE_DM, "bob", "", "4"),
    };
    for (size_t i = 0; i < 3; i++)
        cr_expect(notify_enqueue(n, &q[i]));
    cr_expect(!notify_enqueue(n, &q[3]), "full");
    cr_expect(notify_enqueue(n, &q[1]), "a held id is accepted and ignored");
    struct notify_stats s = stats_of(n);
    cr_expect_eq(s.queue_depth, 3);
    cr_expect_eq(s.rejected, 1);
    cr_expect_eq(s.enqueued, 3);
    struct notification bad = note("", "alice", NOTE_DM, "bob", "", "x");
    cr_expect(!notify_enqueue(n, &bad), "no id");
    bad = note("x1", "", NOTE_DM, "bob", "", "x");
    cr_expect(!notify_enqueue(n, &bad), "no recipient");
    memset(bad.id, 'f', sizeof(bad.id)); /* unterminated */
    snprintf(bad.recipient, sizeof(bad.recipient), "alice");
    cr_expect(!notify_enqueue(n, &bad), "unterminated id");
    notify_stop(n);
    cr_expect(!notify_enqueue(n, &q[3]), "stopped");
    cr_expect_eq(stats_of(n).sent, 0, "stop does not flush");
    notify_free(n);
    notify_free(NULL);

    /* options that notify_new refuses */
    mbox_opts(&o, path, sizeof(path));
    o.smtp_from = "parley\r\nBcc: eve@evil.org";
    cr_expect_null(notify_new(&o, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "smtp_from"), "%s", err);
    mbox_opts(&o, path, sizeof(path));
    o.smtp_url = "http://relay:25";
    cr_expect_null(notify_new(&o, NULL, err, sizeof(err)));
    mbox_opts(&o, path, sizeof(path));
    o.mbox_path = "/nonexistent-dir/x/mail.mbox";
    cr_expect_null(notify_new(&o, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "mailbox"), "%s", err);
    mbox_opts(&o, path, sizeof(path));
    o.max_attempts = 0;
    cr_expect_null(notify_new(&o, NULL, err, sizeof(err)));
}

#define ENQ_THREADS 4
#define ENQ_EACH 100

struct enq_arg {
    notify_t *n;
    int t;
    int accepted;
};

static void *enqueuer(void *p)
{
    struct enq_arg *a = p;
    for (int i = 0; i < ENQ_EACH; i++) {
        char id[33], to[33];
        snprintf(id, sizeof(id), "t%di%d", a->t, i);
        snprintf(to, sizeof(to), "user%d", (a->t * ENQ_EACH + i) % 13);
        struct notification x = note(id, to, i % 2 ? NOTE_DM : NOTE_MENTION, "bob", "r", "hi");
        a->accepted += notify_enqueue(a->n, &x);
        if (i % 10 == 0)
            notify_flush(a->n);
        struct notify_stats st;
        notify_stats(a->n, &st);
    }
    return NULL;
}

Test(notify, many_threads_enqueue_while_the_worker_sends)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    pthread_t th[ENQ_THREADS];
    struct enq_arg args[ENQ_THREADS];
    for (int t = 0; t < ENQ_THREADS; t++) {
        args[t] = (struct enq_arg){.n = n, .t = t};
        cr_assert_eq(pthread_create(&th[t], NULL, enqueuer, &args[t]), 0);
    }
    int accepted = 0;
    for (int t = 0; t < ENQ_THREADS; t++) {
        pthread_join(th[t], NULL);
        accepted += args[t].accepted;
    }
    cr_expect_eq(accepted, ENQ_THREADS * ENQ_EACH, "the queue is big enough for all");
    WAIT_FOR(stats_of(n).sent == (uint64_t)accepted, "all delivered");
    struct notify_stats s = stats_of(n);
    cr_expect_eq(s.queue_depth, 0);
    cr_expect_leq(s.emails, s.sent);
    notify_free(n);
    char *text = slurp(path, NULL);
    size_t seps = 0, lines = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        seps += strncmp(l, "From ", 5) == 0;
    for (const char *p = text; (p = strstr(p, " at 2026-11-23 16:00:00 UTC: hi\n")); p++)
        lines++;
    cr_expect_eq(seps, s.emails, "one mbox entry per e-mail");
    cr_expect_eq(lines, (size_t)accepted, "every notification listed once");
    free(text);
}

/* ---- the outbox ---- */

Test(notify, picks_up_pending_rows_at_start_and_drops_bad_addresses)
{
    fake_add("p1", "alice", "alice@example.com", "mention", "bob", "general", "first", 0);
    fake_add("p2", "alice", "alice@example.com", "dm", "carol", "", "retried", 2);
    fake_add("bad1", "mallory", "mallory@example.com\r\nBcc: eve@evil.org", "dm", "bob", "", "x",
             0);
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(fake_state_is("p1", "sent") && fake_state_is("p2", "sent"), "both marked sent");
    WAIT_FOR(fake_state_is("bad1", "dead"), "an invalid address is given up at once");
    char st[8];
    int attempts = -1;
    fake_get("p2", st, &attempts, NULL);
    cr_expect_eq(attempts, 3, "attempts carry over from the row");
    struct notify_stats s = stats_of(n);
    cr_expect_eq(s.sent, 2);
    cr_expect_eq(s.emails, 1, "rows of one recipient coalesce too");
    cr_expect_eq(s.dead, 1);
    cr_expect_eq(s.failed, 0, "no send was tried for it");
    notify_free(n);
    char *text = slurp(path, NULL);
    cr_expect(strstr(text, "[general] bob at") && strstr(text, "carol (direct message) at"), "%s",
              text);
    free(text);
}

Test(notify, full_queue_is_caught_up_from_the_outbox)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.coalesce_ms = 3600 * 1000;
    o.queue_max = 1;
    o.rescan_ms = 20;
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    /* the broker's view: both recorded in the outbox, one fits in memory */
    struct notification a = note("f1", "alice", NOTE_DM, "bob", "", "fits");
    struct notification b = note("f2", "bob", NOTE_DM, "alice", "", "overflow");
    fake_add("f1", "alice", "alice@example.com", "dm", "bob", "", "fits", 0);
    fake_add("f2", "bob", "bob@example.com", "dm", "alice", "", "overflow", 0);
    cr_assert(notify_enqueue(n, &a), "fits (or was already picked up: a duplicate)");
    cr_expect(!notify_enqueue(n, &b), "the queue holds one");
    notify_flush(n);
    WAIT_FOR(fake_state_is("f1", "sent"), "the held one is sent");
    /* the queue has room again: a rescan brings f2 in (no window for it) */
    WAIT_FOR(fake_state_is("f2", "sent"), "the overflow is picked up from the outbox");
    cr_expect_eq(stats_of(n).sent, 2);
    notify_free(n);
}

Test(notify, late_outbox_insert_is_not_sent_twice)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.rescan_ms = 10;
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    struct notification a = note("l1", "alice", NOTE_DM, "bob", "", "once");
    cr_assert(notify_enqueue(n, &a));
    WAIT_FOR(stats_of(n).sent == 1, "sent from memory");
    /* now the broker's outbox insert lands, after the send */
    fake_add("l1", "alice", "alice@example.com", "dm", "bob", "", "once", 0);
    WAIT_FOR(fake_state_is("l1", "sent"), "recognised and marked, not resent");
    int calls = fake_pending_calls();
    WAIT_FOR(fake_pending_calls() > calls + 2, "a few more rescans");
    cr_expect_eq(stats_of(n).emails, 1);
    cr_expect(notify_enqueue(n, &a), "a finished id is accepted and ignored");
    cr_expect_eq(stats_of(n).queue_depth, 0);
    notify_free(n);
    char *text = slurp(path, NULL);
    char *msgs[4];
    size_t count = mbox_split(text, msgs, 4);
    cr_expect_eq(count, 1);
    for (size_t i = 0; i < count; i++)
        free(msgs[i]);
    free(text);
}

Test(notify, a_missing_row_does_not_keep_others_unmarked)
{
    struct notify_opts o;
    char path[4200], err[256] = "";
    mbox_opts(&o, path, sizeof(path));
    o.coalesce_ms = 3600 * 1000;
    o.rescan_ms = 3600 * 1000; /* only the first scan, before anything is queued */
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(fake_pending_calls() == 1, "the start-up scan is done");
    /* m1's outbox row has not landed yet; m2's has */
    fake_add("m2", "alice", "alice@example.com", "dm", "carol", "", "two", 0);
    struct notification a = note("m1", "alice", NOTE_DM, "bob", "", "one");
    struct notification b = note("m2", "alice", NOTE_DM, "carol", "", "two");
    cr_assert(notify_enqueue(n, &a));
    cr_assert(notify_enqueue(n, &b));
    notify_flush(n);
    WAIT_FOR(stats_of(n).sent == 2, "one e-mail with both");
    cr_expect(fake_state_is("m2", "sent"), "marked although m1 had no row");
    cr_expect_eq(stats_of(n).emails, 1);
    notify_free(n);
}

/* ---- an SMTP sink on a thread of this test ---- */

enum sink_mode {
    SINK_ACCEPT,
    SINK_REFUSE_RCPT, /* 554 on every RCPT */
    SINK_SILENT,      /* accept the connection, never answer */
};

struct sink {
    int lfd;
    int port;
    enum sink_mode mode;
    pthread_t thread;
    int stop_pipe[2];
    pthread_mutex_t lock;
    int connections;
    int rcpts; /* RCPT commands seen */
    size_t nmsgs;
    char *msgs[16];
    char mail_from[300], rcpt_to[300];
};

static int sink_listen(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind: %s", strerror(errno));
    cr_assert_eq(listen(fd, 8), 0);
    return fd;
}

static int port_of(int fd)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    return ntohs(a.sin_port);
}

/* A port nobody listens on (connections are refused), for "relay down". */
static int free_port(void)
{
    int fd = sink_listen(0);
    int port = port_of(fd);
    close(fd);
    return port;
}

/* Read one line (up to CRLF) into buf; false on EOF, error or stop. */
static bool sink_line(struct sink *s, int fd, char *buf, size_t bufsz)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            return false;
        if (p[1].revents)
            return false;
        if (!p[0].revents)
            continue;
        char c;
        if (recv(fd, &c, 1, 0) != 1)
            return false;
        if (n + 1 < bufsz)
            buf[n++] = c;
        if (c == '\n') {
            buf[n] = '\0';
            return true;
        }
    }
}

static void say(int fd, const char *s)
{
    (void)!send(fd, s, strlen(s), MSG_NOSIGNAL);
}

static void sink_session(struct sink *s, int fd)
{
    char line[4096];
    if (s->mode == SINK_SILENT) {
        while (sink_line(s, fd, line, sizeof(line)))
            ; /* hold the connection until stopped or closed */
        return;
    }
    say(fd, "220 sink ESMTP\r\n");
    while (sink_line(s, fd, line, sizeof(line))) {
        if (strncasecmp(line, "EHLO", 4) == 0) {
            say(fd, "250-sink\r\n250 8BITMIME\r\n");
        } else if (strncasecmp(line, "HELO", 4) == 0) {
            say(fd, "250 sink\r\n");
        } else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
            pthread_mutex_lock(&s->lock);
            snprintf(s->mail_from, sizeof(s->mail_from), "%.290s", line + 10);
            pthread_mutex_unlock(&s->lock);
            say(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
            pthread_mutex_lock(&s->lock);
            s->rcpts++;
            snprintf(s->rcpt_to, sizeof(s->rcpt_to), "%.290s", line + 8);
            pthread_mutex_unlock(&s->lock);
            say(fd, s->mode == SINK_REFUSE_RCPT ? "554 5.7.1 refused\r\n" : "250 ok\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            say(fd, "354 go ahead\r\n");
            size_t cap = 65536, n = 0;
            char *msg = malloc(cap);
            while (sink_line(s, fd, line, sizeof(line)) && strcmp(line, ".\r\n") != 0) {
                const char *l = line[0] == '.' ? line + 1 : line; /* undo dot-stuffing */
                size_t k = strlen(l);
                if (n + k + 1 > cap)
                    msg = realloc(msg, cap = (n + k + 1) * 2);
                memcpy(msg + n, l, k);
                n += k;
            }
            msg[n] = '\0';
            pthread_mutex_lock(&s->lock);
            if (s->nmsgs < 16)
                s->msgs[s->nmsgs++] = msg;
            else
                free(msg);
            pthread_mutex_unlock(&s->lock);
            say(fd, "250 queued\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            say(fd, "221 bye\r\n");
            return;
        } else if (strncasecmp(line, "RSET", 4) == 0 || strncasecmp(line, "NOOP", 4) == 0) {
            say(fd, "250 ok\r\n");
        } else {
            say(fd, "502 unknown\r\n");
        }
    }
}

static void *sink_main(void *arg)
{
    struct sink *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!p[0].revents)
            continue;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->connections++;
        pthread_mutex_unlock(&s->lock);
        sink_session(s, fd);
        close(fd);
    }
    return NULL;
}

static void sink_start(struct sink *s, enum sink_mode mode, int port)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->mode = mode;
    s->lfd = sink_listen(port);
    s->port = port_of(s->lfd);
    cr_assert_eq(pipe2(s->stop_pipe, O_CLOEXEC), 0);
    cr_assert_eq(pthread_create(&s->thread, NULL, sink_main, s), 0);
}

static void sink_stop(struct sink *s)
{
    (void)!write(s->stop_pipe[1], "x", 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    for (size_t i = 0; i < s->nmsgs; i++)
        free(s->msgs[i]);
    pthread_mutex_destroy(&s->lock);
}

static size_t sink_count(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->nmsgs;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static int sink_get(struct sink *s, int *field)
{
    pthread_mutex_lock(&s->lock);
    int v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

static void smtp_opts(struct notify_opts *o, char *url, size_t urlsz, int port)
{
    notify_opts_default(o);
    snprintf(url, urlsz, "smtp://127.0.0.1:%d", port);
    o->smtp_url = url;
    o->smtp_from = "parley@chat.example.org";
    o->coalesce_ms = 0;
    o->backoff_base_ms = 5;
    o->max_backoff_ms = 20;
    o->connect_timeout_ms = 20000;
    o->send_timeout_ms = 30000;
}

Test(notify, smtp_delivers_with_headers_and_dot_stuffing)
{
    struct sink s;
    sink_start(&s, SINK_ACCEPT, 0);
    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), s.port);
    fake_add("s1", "alice", "alice@example.com", "mention", "bob", "general", "hi @alice\n.\n", 0);
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(fake_state_is("s1", "sent"), "sent and marked");
    /* "[general] bob at 2026-11-23 16:00:00 UTC: " is 42 characters; 33 more
     * fill the line to 75, so quoted-printable breaks it softly and the next
     * encoded line starts with "..". Unless it is dot-stuffed on the wire,
     * the relay drops one of the dots. */
    char text[64];
    memset(text, 'x', 33);
    strcpy(text + 33, "..");
    struct notification a = note("dot1", "alice", NOTE_MENTION, "bob", "general", text);
    cr_assert(notify_enqueue(n, &a));
    WAIT_FOR(sink_count(&s) == 2, "the second one delivered");
    notify_free(n);
    cr_assert_eq(sink_count(&s), 2);
    cr_expect(strstr(s.mail_from, "<parley@chat.example.org>"), "%s", s.mail_from);
    cr_expect(strstr(s.rcpt_to, "<alice@example.com>"), "%s", s.rcpt_to);
    struct mail m;
    mail_parse(&m, s.msgs[0]);
    cr_expect(has_header(&m, "From: parley <parley@chat.example.org>"), "%s", m.headers);
    cr_expect(has_header(&m, "To: \"alice\" <alice@example.com>"), "%s", m.headers);
    cr_expect(has_header(&m, "Subject: [parley] bob mentioned you in general"), "%s", m.headers);
    cr_expect(has_header(&m, "MIME-Version: 1.0"));
    cr_expect(has_header(&m, "Content-Type: text/plain; charset=utf-8"));
    cr_expect(has_header(&m, "Content-Transfer-Encoding: quoted-printable"));
    cr_expect(header_match(&m, "Date: ", true), "%s", m.headers);
    cr_expect(header_match(&m, "Message-ID: <", true), "%s", m.headers);
    cr_expect(strstr(m.headers, "@chat.example.org>\n"), "%s", m.headers);
    cr_expect(strstr(m.body, "[general] bob at 2026-11-23 16:00:00 UTC: hi @alice\n    .\n"), "%s",
              m.body);
    mail_release(&m);

    cr_expect(strstr(s.msgs[1], "\r\n..\r\n"), "the encoded line starts with dots:\n%s", s.msgs[1]);
    mail_parse(&m, s.msgs[1]);
    char want[128];
    snprintf(want, sizeof(want), "UTC: %s\n", text);
    cr_expect(strstr(m.body, want), "a line starting with a dot survives:\n%s", m.body);
    mail_release(&m);
    sink_stop(&s);
}

Test(notify, relay_down_then_up_delivers_once)
{
    int port = free_port();
    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), port);
    o.max_attempts = 100000;
    o.breaker_threshold = 3;
    o.breaker_cooldown_ms = 20;
    fake_add("d1", "alice", "alice@example.com", "dm", "bob", "", "are you there?", 0);
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(stats_of(n).failed >= 3, "the relay is down");
    cr_expect_eq(stats_of(n).sent, 0);
    char st[8];
    int attempts = 0;
    fake_get("d1", st, &attempts, NULL);
    cr_expect_str_eq(st, "pending", "still pending while retrying");
    cr_expect_geq(attempts, 1, "attempts are recorded in the outbox");
    struct sink s;
    sink_start(&s, SINK_ACCEPT, port);
    WAIT_FOR(fake_state_is("d1", "sent"), "delivered once the relay is back");
    notify_free(n); /* nothing can be sent after this */
    cr_expect_eq(sink_count(&s), 1, "exactly once");
    sink_stop(&s);
}

Test(notify, relay_refusing_forever_goes_dead)
{
    struct sink s;
    sink_start(&s, SINK_REFUSE_RCPT, 0);
    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), s.port);
    o.max_attempts = 3;
    o.breaker_threshold = 100;
    fake_add("r1", "alice", "alice@example.com", "dm", "bob", "", "hello", 0);
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(stats_of(n).dead == 1, "given up");
    struct notify_stats st = stats_of(n);
    cr_expect_eq(st.failed, 3, "exactly max_attempts tries");
    cr_expect_eq(st.sent, 0);
    cr_expect_eq(st.queue_depth, 0);
    char state[8];
    int attempts = 0;
    cr_assert(fake_get("r1", state, &attempts, NULL));
    cr_expect_str_eq(state, "dead");
    cr_expect_eq(attempts, 3);
    notify_free(n);
    cr_expect_eq(sink_get(&s, &s.rcpts), 3);
    cr_expect_eq(sink_count(&s), 0);
    sink_stop(&s);
}

Test(notify, breaker_opens_and_holds)
{
    struct sink s;
    sink_start(&s, SINK_REFUSE_RCPT, 0);
    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), s.port);
    o.max_attempts = 1000;
    o.breaker_threshold = 2;
    o.breaker_cooldown_ms = 3600 * 1000;
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    cr_expect_eq(stats_of(n).breaker_state, BREAKER_CLOSED);
    struct notification a = note("k1", "alice", NOTE_DM, "bob", "", "x");
    cr_assert(notify_enqueue(n, &a));
    WAIT_FOR(stats_of(n).breaker_state == BREAKER_OPEN, "open after 2 failures");
    cr_expect_eq(stats_of(n).failed, 2);
    /* while open nothing is tried, however many are due */
    struct notification b = note("k2", "bob", NOTE_DM, "alice", "", "y");
    cr_assert(notify_enqueue(n, &b));
    notify_flush(n);
    cr_expect_eq(stats_of(n).failed, 2);
    cr_expect_eq(stats_of(n).queue_depth, 2);
    notify_free(n); /* returns without waiting out the cooldown */
    cr_expect_eq(sink_get(&s, &s.rcpts), 2);
    sink_stop(&s);
}

Test(notify, shutdown_is_prompt_while_the_relay_hangs)
{
    struct sink s;
    sink_start(&s, SINK_SILENT, 0);
    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), s.port);
    /* only the drain deadline can end this send: the test would time out
     * if notify_free waited for curl's own timeouts */
    o.connect_timeout_ms = 3600 * 1000;
    o.send_timeout_ms = 3600 * 1000;
    o.drain_timeout_ms = 50;
    fake_add("h1", "alice", "alice@example.com", "dm", "bob", "", "hello", 0);
    notify_t *n = notify_new(&o, &fake, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    WAIT_FOR(sink_get(&s, &s.connections) == 1, "the send is in progress");
    notify_free(n);
    char state[8];
    int attempts = -1, marks = -1;
    cr_assert(fake_get("h1", state, &attempts, &marks));
    cr_expect_str_eq(state, "pending", "left for the next start");
    cr_expect_eq(attempts, 0, "an abandoned send is not an attempt");
    cr_expect_eq(marks, 0);
    sink_stop(&s);
}

/* ---- a real SMTP server: Debian's aiosmtpd ---- */

Test(notify, aiosmtpd_end_to_end)
{
    /* valgrind would follow the child into the Python interpreter */
    if (RUNNING_ON_VALGRIND)
        cr_skip_test("not under valgrind");
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null") != 0)
        cr_skip_test("python3-aiosmtpd is not installed");
    char maildir[4200], listen_arg[64];
    snprintf(maildir, sizeof(maildir), "%s/Maildir", tmpdir);
    int port = free_port();
    snprintf(listen_arg, sizeof(listen_arg), "127.0.0.1:%d", port);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    smtpd_pid = pid;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* and if this test process dies */
        execl("/usr/bin/python3", "python3", "-m", "aiosmtpd", "-n", "-l", listen_arg, "-c",
              "aiosmtpd.handlers.Mailbox", maildir, (char *)NULL);
        _exit(127);
    }
    /* wait until it listens */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool up = false;
    for (int64_t end = mono_ms() + WAIT_MS; !up && mono_ms() < end;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        up = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (!up)
            nap();
    }
    cr_assert(up, "aiosmtpd did not start");

    struct notify_opts o;
    char url[64], err[256] = "";
    smtp_opts(&o, url, sizeof(url), port);
    notify_t *n = notify_new(&o, NULL, err, sizeof(err));
    cr_assert_not_null(n, "%s", err);
    struct notification x = note("e1", "alice", NOTE_DM, "bob", "",
                                 "na\xc3\xafve = caf\xc3\xa9, a long line that goes on and on "
                                 "and on well past seventy-six characters of text");
    cr_assert(notify_enqueue(n, &x));
    WAIT_FOR(stats_of(n).sent == 1, "aiosmtpd accepted it");
    notify_free(n);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    smtpd_pid = 0;

    char newdir[4300];
    snprintf(newdir, sizeof(newdir), "%s/new", maildir);
    DIR *d = opendir(newdir);
    cr_assert_not_null(d, "no Maildir/new");
    struct dirent *e;
    char file[4600] = "";
    int files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        files++;
        snprintf(file, sizeof(file), "%s/%s", newdir, e->d_name);
    }
    closedir(d);
    cr_assert_eq(files, 1);
    char *raw = slurp(file, NULL);
    struct mail m;
    mail_parse(&m, raw);
    cr_expect(has_header(&m, "X-MailFrom: parley@chat.example.org"), "%s", m.headers);
    cr_expect(has_header(&m, "X-RcptTo: alice@example.com"), "%s", m.headers);
    cr_expect(has_header(&m, "Subject: [parley] Direct message from bob"), "%s", m.headers);
    cr_expect(strstr(m.body, "bob (direct message) at 2026-11-23 16:00:00 UTC: na\xc3\xafve = "
                             "caf\xc3\xa9, a long line that goes on and on and on well past "
                             "seventy-six characters of text\n"),
              "%s", m.body);
    mail_release(&m);
    free(raw);
}
