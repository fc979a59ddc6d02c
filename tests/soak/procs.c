/*
 * procs: what the soak reads from the kernel. Processes from /proc (a
 * master's children with their titles; the /proc readers themselves, fd
 * counts and RSS among them, are the suites', in ../procutil.c), and the
 * TCP connections a worker holds, from its fd table and the sock_diag
 * netlink dump, so that a fault can name the connections it may cost. Also
 * the small utilities (clock, random numbers, files) the other files share.
 */
#define _GNU_SOURCE
#include "soak.h"
#include "../procutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The most sockets a worker holds that we look up. */
#define HELD_INODES_MAX 4096
/* Linux's TCP states (include/net/tcp_states.h) that sock_diag filters by. */
#define TCP_STATE_LISTEN 10
#define TCP_STATE_TIME_WAIT 6
#define TCP_STATES_ALL 0xfff

double soak_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift64*: reproducible from the printed seed. */
uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ULL;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

double rng_uniform(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next(s) >> 11) / (double)(1ULL << 53);
}

void fill_pattern(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t s = seed | 1;

    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = rng_next(&s);
        size_t n = len - i < 8 ? len - i : 8;

        memcpy(buf + i, &v, n);
    }
}

char proc_state(pid_t pid)
{
    struct tu_proc_stat st;

    return tu_proc_stat(pid, &st) ? st.state : 0;
}

/* "preforkd: worker process #ID (generation G)[ is shutting down]" */
static void parse_worker_title(struct proc_child *c)
{
    static const char prefix[] = "preforkd: worker process #";
    const char *g;

    c->task = -1;
    c->generation = 0;
    c->shutting_down = false;
    if (strncmp(c->title, prefix, sizeof(prefix) - 1) != 0)
        return;
    c->task = atoi(c->title + sizeof(prefix) - 1);
    g = strstr(c->title, "(generation ");
    if (g != NULL)
        c->generation = (unsigned)strtoul(g + 12, NULL, 10);
    c->shutting_down = strstr(c->title, "shutting down") != NULL;
}

struct children {
    pid_t parent;
    struct proc_child *out;
    int max, n;
};

static void note_child(pid_t pid, void *arg)
{
    struct children *ch = arg;
    struct tu_proc_stat st;

    if (!tu_proc_stat(pid, &st) || st.ppid != ch->parent)
        return;
    if (ch->n < ch->max) {
        struct proc_child *c = &ch->out[ch->n];

        c->pid = pid;
        c->state = st.state;
        tu_proc_cmdline(pid, c->title, sizeof(c->title));
        parse_worker_title(c);
    }
    ch->n++;
}

int proc_children(pid_t parent, struct proc_child *out, int max)
{
    struct children ch = { parent, out, max, 0 };

    tu_each_process(note_child, &ch);
    return ch.n;
}

bool proc_wait_stopped(pid_t pid, double timeout_sec)
{
    double deadline = soak_now() + timeout_sec;

    for (;;) {
        char s = proc_state(pid);

        if (s == 'T' || s == 't')
            return true;
        if (s == 0 || s == 'Z' || soak_now() > deadline)
            return false;
        usleep(200);
    }
}

static int compare_ulong(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

    return (x > y) - (x < y);
}

int proc_held_connections(pid_t pid, struct held_conn *out, int max)
{
    static unsigned long inodes[HELD_INODES_MAX];
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req = {
        .nlh = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
        .r = { .sdiag_family = AF_INET, .sdiag_protocol = IPPROTO_TCP,
               .idiag_states = TCP_STATES_ALL & ~((1u << TCP_STATE_LISTEN) |
                                                  (1u << TCP_STATE_TIME_WAIT)) },
    };
    static char buf[65536];
    int ninodes = tu_proc_socket_inodes(pid, inodes, HELD_INODES_MAX), n = 0, err = 0;
    int nl;
    bool done = false;

    if (ninodes < 0)
        return ninodes;
    qsort(inodes, (size_t)ninodes, sizeof(inodes[0]), compare_ulong);
    nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0)
        return -errno;
    if (send(nl, &req, sizeof(req), 0) < 0) {
        err = -errno;
        close(nl);
        return err;
    }
    while (!done) {
        ssize_t len = recv(nl, buf, sizeof(buf), 0);
        struct nlmsghdr *h;

        if (len < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (len == 0)
            break;
        for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
            const struct inet_diag_msg *m;
            unsigned long ino;

            if (h->nlmsg_type == NLMSG_DONE) {
                done = true;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                err = e->error < 0 ? e->error : -EIO;
                done = true;
                break;
            }
            m = NLMSG_DATA(h);
            ino = m->idiag_inode;
            if (ino != 0 && bsearch(&ino, inodes, (size_t)ninodes, sizeof(inodes[0]),
                                    compare_ulong) != NULL && n < max) {
                out[n].server_port = ntohs(m->id.idiag_sport);
                out[n].client_port = ntohs(m->id.idiag_dport);
                n++;
            }
        }
    }
    close(nl);
    return err < 0 ? err : n;
}

bool write_file(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX + 8];
    FILE *f;
    bool ok;

    /* Through a rename: a master may read the file any time. */
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    if (f == NULL)
        return false;
    ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0;
}

char *read_file_from(const char *path, size_t offset, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf;
    ssize_t n;
    size_t want;

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < offset) {
        close(fd);
        return NULL;
    }
    want = (size_t)st.st_size - offset;
    buf = malloc(want + 1);
    if (buf == NULL) {
        close(fd);
        return NULL;
    }
    n = pread(fd, buf, want, (off_t)offset);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

bool port_bindable(unsigned port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    bool ok;

    if (fd < 0)
        return false;
    /* As the daemon binds: SO_REUSEADDR, so that TIME_WAIT does not count. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(fd, 1) == 0;
    close(fd);
    return ok;
}

/* Outside the kernel's ephemeral range, so that no client connection can be
 * using it as its own port when a reload binds it. */
unsigned free_port(void)
{
    unsigned lo = 32768, hi = 60999, first, count;
    uint64_t rng = (uint64_t)getpid() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(soak_now() * 1e9);
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

    if (f != NULL) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    if (lo > 11024)
        first = 1024, count = lo - 1024;
    else if (hi < 55535)
        first = hi + 1, count = 65535 - hi;
    else
        first = 1024, count = 65535 - 1024;     /* nowhere outside: anywhere */
    for (int i = 0; i < 1000; i++) {
        unsigned port = first + (unsigned)(rng_next(&rng) % count);

        if (port_bindable(port))
            return port;
    }
    return 0;
}

void rmtree(const char *path)
{
    DIR *dir = opendir(path);
    struct dirent *e;

    if (dir == NULL) {
        unlink(path);
        return;
    }
    while ((e = readdir(dir)) != NULL) {
        char sub[PATH_MAX];

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        if (e->d_type == DT_DIR)
            rmtree(sub);
        else
            unlink(sub);
    }
    closedir(dir);
    rmdir(path);
}
