/* The bare C baseline for bench/compare.py: a NETLINK_KOBJECT_UEVENT socket
 * (group 1, 16 MiB asked with SO_RCVBUFFORCE like hotplugd's default) and a
 * recv loop that only counts datagrams. On SIGTERM: "accepted=N" on stderr.
 * No parsing, no sender check: the least any listener can do. */
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

int main(void)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (fd < 0) { perror("socket"); return 1; }
    int sz = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("bind"); return 1; }
    struct sigaction act = { .sa_handler = on_term };
    sigaction(SIGTERM, &act, NULL); /* no SA_RESTART: recv returns EINTR */
    static char buf[8192];
    unsigned long n = 0;
    while (!stop) {
        if (recv(fd, buf, sizeof buf, 0) >= 0)
            n++;
    }
    fprintf(stderr, "accepted=%lu\n", n);
    return 0;
}
