/* The floor for bench/latency.py: the least a uevent listener can do to run
 * a handler. Blocks in recv() on the kernel's uevent socket; for each
 * datagram that carries SYNTH_ARG_T, fork()s and execve()s the handler
 * (argv[1], with argv[2] as its argument and SYNTH_ARG_T=... as its whole
 * environment). No rules, no checks, no output pipe, no process groups.
 *
 * Usage: exec_floor HANDLER ARG   (prints "listening" on stderr once bound)
 */
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_groups = 1 };
    int sz = 16 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("uevent socket");
        return 1;
    }
    fprintf(stderr, "listening\n");
    static char buf[8192];
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = 0;
        char *t = NULL;
        for (char *p = buf; p < buf + n; p += strlen(p) + 1)
            if (!strncmp(p, "SYNTH_ARG_T=", 12))
                t = p;
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (!t)
            continue;
        char *av[] = { argv[1], argv[2], NULL };
        char *ev[] = { t, NULL };
        if (fork() == 0) {
            execve(argv[1], av, ev);
            _exit(127);
        }
    }
}
