/*
 * vctl_preflight - `volleyctl check-domain DOMAIN`: the sending-domain preflight
 * (DKIM, SPF, DMARC, forward-confirmed reverse DNS of the sources, bounce domain
 * MX), answered from DNS with c-ares, offline from the daemon.
 *
 * Entry points: vctl_preflight_cmd() tells main() the command word is ours;
 * vctl_preflight_main() runs it and returns the exit status (0 nothing failed, 1 a
 * check failed or the config could not be read, 2 bad usage).
 */
#ifndef VOLLEY_VCTL_PREFLIGHT_H
#define VOLLEY_VCTL_PREFLIGHT_H

/* vctl_preflight_cmd - 1 if word is "check-domain" */
int vctl_preflight_cmd(const char *word);

/*
 * vctl_preflight_main - run check-domain with argv[0] the command word and its
 * arguments argv[1..argc); config is the global -c option (NULL when absent).
 */
int vctl_preflight_main(int argc, char **argv, const char *config);

#endif
