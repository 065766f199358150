/* admin — see admin.h. */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "acctrds.h"
#include "auth.h"
#include "codec.h"
#include "config.h"
#include "log.h"
#include "store.h"
#include "store_accounts.h"
#include "util.h"

bool admin_is_command(int argc, char **argv)
{
    return argc > 1 && (strcmp(argv[1], "token") == 0 || strcmp(argv[1], "user") == 0);
}

/* "90", "90s", "30m", "1h", "7d" -> seconds; -1 if malformed. */
static long parse_duration(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v <= 0)
        return -1;
    long mul = 1;
    if (*end == 'm')
        mul = 60;
    else if (*end == 'h')
        mul = 3600;
    else if (*end == 'd')
        mul = 86400;
    else if (*end && *end != 's')
        return -1;
    if (*end && end[1])
        return -1;
    return v > 100L * 365 * 86400 / mul ? -1 : v * mul;
}

/* Read a password: a prompt without echo on a terminal, else one stdin line. */
static int read_password(const char *prompt, char *buf, size_t sz)
{
    struct termios old, noecho;
    bool tty = isatty(STDIN_FILENO);
    if (tty) {
        fprintf(stderr, "%s", prompt);
        tcgetattr(STDIN_FILENO, &old);
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
    }
    char *ok = fgets(buf, (int)sz, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int cmd_token(struct config *cfg, const char *user, long ttl)
{
    unsigned char key[256];
    size_t keylen;
    char err[256], token[1024];

    if (auth_load_or_create_secret(cfg->token_secret_file, key, sizeof(key), &keylen, err,
                                   sizeof(err)) != 0) {
        fprintf(stderr, "parleyd token: %s\n", err);
        return 1;
    }
    int64_t now_ms = now_wall_ms();
    if (auth_jwt_sign(key, keylen, user, now_ms, now_ms / 1000 + ttl, token, sizeof(token)) != 0) {
        fprintf(stderr, "parleyd token: cannot sign\n");
        return 1;
    }
    printf("%s\n", token);
    return 0;
}

/* --engine redis://...: accounts live in the cluster's Redis (the first of
 * the list, as the server keeps them); else in the --db file. */
struct admin_accounts {
    store_t *st;
    acctrds_t *ra;
};

static int accounts_open(struct admin_accounts *aa, const struct config *cfg)
{
    char err[512], pw[512] = "";
    struct store_opts so = {.path = cfg->db_path, .readers = 1};

    if (strncmp(cfg->engine, "redis://", 8) != 0) {
        aa->st = store_open(&so, err, sizeof(err));
    } else if (cfg->redis_password_file &&
               auth_read_password_file(cfg->redis_password_file, pw, sizeof(pw)) != 0) {
        snprintf(err, sizeof(err), "cannot read --redis-password-file '%s'",
                 cfg->redis_password_file);
    } else {
        aa->ra = acctrds_open(cfg->engine, pw, 2000, err, sizeof(err));
        memset(pw, 0, sizeof(pw));
    }
    if (aa->st || aa->ra)
        return 0;
    fprintf(stderr, "parleyd user: %s\n", err);
    return -1;
}

static void accounts_close(struct admin_accounts *aa)
{
    store_close(aa->st);
    acctrds_close(aa->ra);
}

/* A name as the store holds it, control bytes escaped for the terminal. */
static void print_user(void *arg, const struct store_user *u)
{
    (void)arg;
    for (const unsigned char *p = (const unsigned char *)u->name; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            printf("\\x%02x", *p);
        else
            putchar(*p);
    printf("\t%s\t%s\n",
           u->deleted ? "deleted"
           : u->email ? "account"
                      : "seen",
           u->email ? u->email : "");
}

/* `user list`: every name ever seen, one a line: name, state, e-mail. */
static int cmd_list(struct config *cfg)
{
    struct admin_accounts aa = {0};
    if (accounts_open(&aa, cfg) != 0)
        return 1;
    int s = aa.ra ? acctrds_load_users(aa.ra, 0, print_user, NULL)
                  : store_load_users(aa.st, 0, print_user, NULL);
    if (s != 0)
        fprintf(stderr, "parleyd user: cannot read the users\n");
    accounts_close(&aa);
    return s == 0 ? 0 : 1;
}

static int cmd_user(struct config *cfg, const char *op, const char *user, const char *email)
{
    char pw[1100], pw2[1100], hash[256];
    int rc = 1;
    struct store_account_add add = {.name = user};
    bool del = strcmp(op, "del") == 0;
    struct admin_accounts aa = {0};

    if (!del) {
        if (email && !auth_email_ok(email)) {
            fprintf(stderr, "parleyd user: malformed email address\n");
            return 2;
        }
        if (read_password("password: ", pw, sizeof(pw)) != 0) {
            fprintf(stderr, "parleyd user: no password given\n");
            return 2;
        }
        if (isatty(STDIN_FILENO)) {
            if (read_password("again: ", pw2, sizeof(pw2)) != 0 || strcmp(pw, pw2) != 0) {
                fprintf(stderr, "parleyd user: passwords differ\n");
                return 2;
            }
        }
        if (!auth_password_ok(pw)) {
            fprintf(stderr, "parleyd user: password must be 8 to 1024 characters\n");
            return 2;
        }
        if (auth_hash_password(pw, strlen(pw), hash, sizeof(hash)) != 0) {
            fprintf(stderr, "parleyd user: cannot hash the password\n");
            return 1;
        }
        add.password_hash = hash;
        add.email = email;
        /* the operator may give a password to a name that signed in with
         * backend tokens only (the same identity, now with a password too);
         * registration over HTTP never may */
        add.adopt = true;
    }
    if (accounts_open(&aa, cfg) != 0)
        return 1;
    int s;
    if (aa.ra)
        s = del                      ? acctrds_account_del(aa.ra, user)
            : strcmp(op, "add") == 0 ? acctrds_account_add(aa.ra, &add)
                                     : acctrds_account_passwd(aa.ra, user, hash);
    else
        s = del                      ? store_account_del(aa.st, user)
            : strcmp(op, "add") == 0 ? store_account_add(aa.st, &add)
                                     : store_account_passwd(aa.st, user, hash);
    if (s == 0) {
        printf("%s: %s\n", op, user);
        rc = 0;
    } else if (s == -EEXIST) {
        fprintf(stderr, "parleyd user: '%s' already has an account\n", user);
    } else if (s == -EACCES) {
        fprintf(stderr, "parleyd user: '%s' was deleted; a deleted name stays reserved\n", user);
    } else if (s == -ENOENT) {
        fprintf(stderr, "parleyd user: %s '%s'\n",
                del ? "no user has ever been called" : "no account", user);
    } else {
        fprintf(stderr, "parleyd user: cannot update the %s (%s)\n",
                aa.ra ? "accounts in Redis" : "database", strerror(-s));
    }
    accounts_close(&aa);
    return rc;
}

int admin_main(int argc, char **argv)
{
    const char *cmd = argv[1], *op = NULL, *user = NULL, *email = NULL;
    long ttl = 3600;
    char err[512];
    struct config cfg;
    /* what is not ours goes to the server's option parser (--db, --config…) */
    char **rest = xcalloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0, i = 2, rc = 2;

    rest[nrest++] = argv[0];
    if (strcmp(cmd, "user") == 0) {
        bool list = argc > 2 && strcmp(argv[2], "list") == 0;
        if (!list && (argc < 4 || (strcmp(argv[2], "add") && strcmp(argv[2], "passwd") &&
                                   strcmp(argv[2], "del")))) {
            fprintf(stderr, "usage: parleyd user add|passwd|del NAME [--email ADDR] [options]\n"
                            "       parleyd user list [options]\n");
            goto out;
        }
        op = argv[2];
        user = list ? NULL : argv[3];
        i = list ? 3 : 4;
    }
    for (; i < argc; i++) {
        if (strcmp(cmd, "token") == 0 && strcmp(argv[i], "--user") == 0 && i + 1 < argc) {
            user = argv[++i];
        } else if (strcmp(cmd, "token") == 0 && strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            ttl = parse_duration(argv[++i]);
            if (ttl < 0) {
                fprintf(stderr, "parleyd token: --ttl: expected e.g. 3600, 30m, 1h, 7d\n");
                goto out;
            }
        } else if (strcmp(cmd, "user") == 0 && strcmp(argv[i], "--email") == 0 && i + 1 < argc) {
            email = argv[++i];
        } else {
            rest[nrest++] = argv[i];
        }
    }
    if (op && strcmp(op, "list") == 0) {
        /* no name to check */
    } else if (!user || !codec_valid_user(user)) {
        fprintf(stderr, strcmp(cmd, "token") == 0
                            ? "usage: parleyd token --user NAME [--ttl 1h] [options]\n"
                            : "parleyd user: invalid user name\n");
        goto out;
    }
    switch (cfg_parse(&cfg, nrest, rest, stdout, err, sizeof(err))) {
    case CFG_EXIT_0:
        rc = 0;
        cfg_release(&cfg);
        goto out;
    case CFG_ERROR:
        fprintf(stderr, "parleyd %s: %s\n", cmd, err);
        cfg_release(&cfg);
        goto out;
    case CFG_OK:
        break;
    }
    log_set_level(LOG_WARN);
    if (!cfg.token_secret_file)
        cfg.token_secret_file = path_beside(cfg.db_path, "token.secret");
    rc = strcmp(cmd, "token") == 0 ? cmd_token(&cfg, user, ttl)
         : strcmp(op, "list") == 0 ? cmd_list(&cfg)
                                   : cmd_user(&cfg, op, user, email);
    cfg_release(&cfg);
out:
    free(rest);
    return rc;
}
