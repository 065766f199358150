/*
 * admin — operator commands built into parleyd, like Centrifugo's gentoken
 * and mosquitto_passwd:
 *   parleyd token --user NAME [--ttl 1h] [server options]
 *   parleyd user add|passwd|del NAME [--email ADDR] [server options]
 *   parleyd user list [server options]   (name, account|seen|deleted, e-mail)
 * With --engine redis://... the accounts are the cluster's, in its Redis.
 * Passwords come from a prompt (terminal) or one line of stdin, never argv.
 * Thread: main, with no server running in this process.
 */
#ifndef PARLEY_ADMIN_H
#define PARLEY_ADMIN_H

#include <stdbool.h>

/* True if argv[1] names an operator command. */
bool admin_is_command(int argc, char **argv);
/* Run it; returns the process exit status. */
int admin_main(int argc, char **argv);

#endif
