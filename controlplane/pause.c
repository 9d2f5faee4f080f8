/* The sandbox ("pause") process of the harness's pods, built static by controlplane/images.py.
 *
 * It only holds the pod's namespaces open: it sleeps until SIGINT or SIGTERM ends it, and
 * reaps the orphans it inherits when it is PID 1 of a PID namespace the pod's containers
 * share (shareProcessNamespace). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signum) {
    (void)signum;
    _exit(0);
}

static void reap(int signum) {
    (void)signum;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_stop = {.sa_handler = stop};
    struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigaction(SIGINT, &on_stop, 0);
    sigaction(SIGTERM, &on_stop, 0);
    sigaction(SIGCHLD, &on_child, 0);
    for (;;) {
        pause();
    }
}
