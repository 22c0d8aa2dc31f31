/*
 * prodx.scanners._fastscan: one-filesystem directory walk for the space scanner.
 *
 * walk(root, stat_files, budget_s, top_n, sample_n, fd_depth) walks `root` (bytes,
 * an absolute path to a directory) depth-first, pre-order, children in getdents64
 * order, and returns raw per-directory aggregates; prodx.scanners.space does the
 * cumulative sums and ranking, and its pure-Python walker must visit in the same
 * order so both backends give identical results.
 *
 * Returns a tuple:
 *   dirs       list of (name: str, parent: int, own_bytes, own_inodes, own_files);
 *              dirs[0] is the root (name "", parent -1).
 *   files      list of (seq, dir_index, name, bytes, mtime_s) for the top_n largest
 *              files (empty when stat_files is false); seq is the encounter order.
 *   entries    directory entries seen.
 *   unreadable entries that vanished or directories that could not be opened/read.
 *   samples    list of (path: str, errno) for the first sample_n of those.
 *   errors     dict errno -> count.
 *   timed_out  bool: the budget ran out and the walk stopped early.
 *
 * The walk reads only, never follows symlinks (fstatat AT_SYMLINK_NOFOLLOW, openat
 * O_NOFOLLOW) and never enters a directory whose st_dev differs from the root's.
 * The GIL is released for the whole walk; no Python object is touched inside it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DENTS_BUF_BYTES (64 * 1024)
#define CHECK_EVERY 1024
#define MAX_TOP_N 10000
#define ERRNO_SLOTS 256

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

typedef struct {
    size_t name_off;   /* into Walk.names */
    Py_ssize_t parent;
    uint64_t own_bytes;
    uint64_t own_inodes;
    uint64_t own_files;
} DirRec;

typedef struct {
    uint64_t bytes;
    uint64_t seq;
    Py_ssize_t dir_index;
    int64_t mtime_sec;
    long mtime_nsec;
    char name[256]; /* NAME_MAX is 255 on Linux */
} TopFile;

typedef struct {
    int fd;            /* open dirfd, or -1 once closed (levels at or below fd_depth) */
    size_t path_len;   /* length of Walk.path for this directory */
    char *kids;        /* packed [uint64 ino][uint64 blocks][name NUL] of subdirs to visit */
    size_t kids_len, kids_cap, kid_pos;
    Py_ssize_t index;
} Frame;

typedef struct {
    /* inputs */
    int stat_files;
    int top_n, sample_n, fd_depth;
    struct timespec deadline;
    dev_t root_dev;
    /* outputs */
    DirRec *dirs; size_t ndirs, dirs_cap;
    char *names; size_t names_len, names_cap;
    TopFile *top; int ntop;
    uint64_t entries, unreadable, seq;
    char **sample_paths; int *sample_errnos; int nsamples;
    uint64_t errno_counts[ERRNO_SLOTS];
    int timed_out, nomem;
    /* working state */
    char *path; size_t path_cap;
    Frame *stack; size_t depth, stack_cap;
    char *dents;
    uint64_t *links; size_t links_cap, links_len; /* open-addressed set of ino+1 */
    uint64_t since_check;
} Walk;

static int grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    void *n = realloc(*buf, ncap * elem);
    if (!n) return -1;
    *buf = n;
    *cap = ncap;
    return 0;
}

static int past_deadline(Walk *w) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > w->deadline.tv_sec ||
           (now.tv_sec == w->deadline.tv_sec && now.tv_nsec >= w->deadline.tv_nsec);
}

static void tick(Walk *w) {
    if (++w->since_check >= CHECK_EVERY) {
        w->since_check = 0;
        if (past_deadline(w)) w->timed_out = 1;
    }
}

static void note_unreadable(Walk *w, const char *name, int err) {
    w->unreadable++;
    w->errno_counts[(err > 0 && err < ERRNO_SLOTS) ? err : 0]++;
    if (w->nsamples >= w->sample_n) return;
    size_t base = w->depth ? w->stack[w->depth - 1].path_len : strlen(w->path);
    size_t nlen = name ? strlen(name) : 0;
    char *p = malloc(base + nlen + 2);
    if (!p) { w->nomem = 1; return; }
    memcpy(p, w->path, base);
    if (name) { p[base] = '/'; memcpy(p + base + 1, name, nlen); p[base + 1 + nlen] = 0; }
    else p[base] = 0;
    w->sample_paths[w->nsamples] = p;
    w->sample_errnos[w->nsamples] = err;
    w->nsamples++;
}

/* Returns 1 when (dev, ino) was already seen; dev is always the root's, so ino is the key. */
static int seen_link(Walk *w, uint64_t ino) {
    if ((w->links_len + 1) * 2 > w->links_cap) {
        size_t ncap = w->links_cap ? w->links_cap * 2 : 1024;
        uint64_t *n = calloc(ncap, sizeof(uint64_t));
        if (!n) { w->nomem = 1; return 0; }
        for (size_t i = 0; i < w->links_cap; i++) {
            uint64_t k = w->links[i];
            if (!k) continue;
            size_t j = (k * 0x9E3779B97F4A7C15ULL) & (ncap - 1);
            while (n[j]) j = (j + 1) & (ncap - 1);
            n[j] = k;
        }
        free(w->links);
        w->links = n;
        w->links_cap = ncap;
    }
    uint64_t key = ino + 1;
    size_t j = (key * 0x9E3779B97F4A7C15ULL) & (w->links_cap - 1);
    while (w->links[j]) {
        if (w->links[j] == key) return 1;
        j = (j + 1) & (w->links_cap - 1);
    }
    w->links[j] = key;
    w->links_len++;
    return 0;
}

/* Min-heap on (bytes asc, seq desc): the root is the file that would leave first. */
static int worse(const TopFile *a, const TopFile *b) {
    return a->bytes < b->bytes || (a->bytes == b->bytes && a->seq > b->seq);
}

static void heap_swap(TopFile *a, TopFile *b) { TopFile t = *a; *a = *b; *b = t; }

static void consider_file(Walk *w, const char *name, const struct stat *st, uint64_t bytes) {
    if (w->top_n <= 0) return;
    TopFile *h = w->top;
    if (w->ntop == w->top_n && bytes <= h[0].bytes) return; /* ties keep the earlier file */
    TopFile f;
    f.bytes = bytes;
    f.seq = w->seq;
    f.dir_index = w->stack[w->depth - 1].index;
    f.mtime_sec = (int64_t)st->st_mtim.tv_sec;
    f.mtime_nsec = st->st_mtim.tv_nsec;
    strncpy(f.name, name, sizeof f.name - 1);
    f.name[sizeof f.name - 1] = 0;
    int i;
    if (w->ntop < w->top_n) {
        i = w->ntop++;
        h[i] = f;
        while (i > 0 && worse(&h[i], &h[(i - 1) / 2])) {
            heap_swap(&h[i], &h[(i - 1) / 2]);
            i = (i - 1) / 2;
        }
        return;
    }
    h[0] = f;
    i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->ntop && worse(&h[l], &h[m])) m = l;
        if (r < w->ntop && worse(&h[r], &h[m])) m = r;
        if (m == i) break;
        heap_swap(&h[i], &h[m]);
        i = m;
    }
}

static int add_dir(Walk *w, const char *name, size_t nlen, Py_ssize_t parent, uint64_t bytes) {
    if (grow((void **)&w->dirs, &w->dirs_cap, w->ndirs + 1, sizeof(DirRec)) ||
        grow((void **)&w->names, &w->names_cap, w->names_len + nlen + 1, 1)) {
        w->nomem = 1;
        return -1;
    }
    DirRec *d = &w->dirs[w->ndirs];
    d->name_off = w->names_len;
    memcpy(w->names + w->names_len, name, nlen);
    w->names[w->names_len + nlen] = 0;
    w->names_len += nlen + 1;
    d->parent = parent;
    d->own_bytes = bytes;
    d->own_inodes = 1;
    d->own_files = 0;
    w->ndirs++;
    return 0;
}

static void push_kid(Walk *w, Frame *f, const char *name, uint64_t ino, uint64_t blocks) {
    size_t nlen = strlen(name);
    size_t need = f->kids_len + 16 + nlen + 1;
    if (grow((void **)&f->kids, &f->kids_cap, need, 1)) { w->nomem = 1; return; }
    memcpy(f->kids + f->kids_len, &ino, 8);
    memcpy(f->kids + f->kids_len + 8, &blocks, 8);
    memcpy(f->kids + f->kids_len + 16, name, nlen + 1);
    f->kids_len = need;
}

/* Reads every entry of the directory on top of the stack: files are counted at once,
 * subdirectories are queued in the frame, to be visited after the fd is done. */
static void read_dir(Walk *w) {
    Frame *f = &w->stack[w->depth - 1];
    /* Safe to hold: w->dirs is only realloc'd by add_dir, never during read_dir. */
    DirRec *rec = &w->dirs[f->index];
    for (;;) {
        long n;
        /* getdents64 has no glibc wrapper before 2.30; EINTR is possible on FUSE/NFS. */
        do { n = syscall(SYS_getdents64, f->fd, w->dents, DENTS_BUF_BYTES); } while (n < 0 && errno == EINTR);
        if (n < 0) { note_unreadable(w, NULL, errno); return; }
        if (n == 0) return;
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(w->dents + off);
            off += d->d_reclen;
            const char *nm = d->d_name;
            if (nm[0] == '.' && (nm[1] == 0 || (nm[1] == '.' && nm[2] == 0))) continue;
            w->entries++;
            w->seq++;
            struct stat st;
            int is_dir = d->d_type == DT_DIR;
            int need_stat = is_dir || w->stat_files || d->d_type == DT_UNKNOWN;
            if (need_stat) {
                if (fstatat(f->fd, nm, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                    note_unreadable(w, nm, errno); /* ENOENT: vanished since getdents */
                    tick(w);
                    if (w->timed_out || w->nomem) return;
                    continue;
                }
                is_dir = S_ISDIR(st.st_mode);
            }
            if (is_dir) {
                /* A different st_dev is another mount: leave it out entirely, like du -x. */
                if (st.st_dev == w->root_dev) push_kid(w, f, nm, (uint64_t)st.st_ino, (uint64_t)st.st_blocks);
            } else if (!w->stat_files) {
                rec->own_inodes++;
                rec->own_files++;
            } else if (!(st.st_nlink > 1 && seen_link(w, (uint64_t)st.st_ino))) {
                uint64_t bytes = (uint64_t)st.st_blocks * 512;
                rec->own_bytes += bytes;
                rec->own_inodes++;
                rec->own_files++;
                consider_file(w, nm, &st, bytes);
            }
            tick(w);
            if (w->timed_out || w->nomem) return;
        }
    }
}

static int set_path(Walk *w, size_t base, const char *name) {
    size_t nlen = strlen(name);
    if (grow((void **)&w->path, &w->path_cap, base + nlen + 2, 1)) { w->nomem = 1; return -1; }
    w->path[base] = '/';
    memcpy(w->path + base + 1, name, nlen + 1);
    return 0;
}

static int push_frame(Walk *w, int fd, size_t path_len, Py_ssize_t index) {
    if (grow((void **)&w->stack, &w->stack_cap, w->depth + 1, sizeof(Frame))) { w->nomem = 1; return -1; }
    Frame *f = &w->stack[w->depth++];
    memset(f, 0, sizeof *f);
    f->fd = fd;
    f->path_len = path_len;
    f->index = index;
    return 0;
}

static void pop_frame(Walk *w) {
    Frame *f = &w->stack[--w->depth];
    if (f->fd >= 0) close(f->fd);
    free(f->kids);
}

static void run_walk(Walk *w, int root_fd) {
    if (push_frame(w, root_fd, strlen(w->path), 0)) { close(root_fd); return; }
    read_dir(w);
    while (w->depth && !w->timed_out && !w->nomem) {
        Frame *f = &w->stack[w->depth - 1];
        /* Bound open fds: below fd_depth, close the dirfd once read; children are then
         * opened by absolute path (which can fail with ENAMETOOLONG past PATH_MAX). */
        if (f->fd >= 0 && (int)w->depth > w->fd_depth) { close(f->fd); f->fd = -1; }
        if (f->kid_pos >= f->kids_len) { pop_frame(w); continue; }
        uint64_t ino, blocks;
        memcpy(&ino, f->kids + f->kid_pos, 8);
        memcpy(&blocks, f->kids + f->kid_pos + 8, 8);
        const char *name = f->kids + f->kid_pos + 16;
        f->kid_pos += 16 + strlen(name) + 1;
        if (add_dir(w, name, strlen(name), f->index, blocks * 512) < 0) break;
        Py_ssize_t idx = (Py_ssize_t)w->ndirs - 1;
        if (set_path(w, f->path_len, name)) break;
        int fd;
        int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
        do {
            fd = f->fd >= 0 ? openat(f->fd, name, flags) : open(w->path, flags);
        } while (fd < 0 && errno == EINTR);
        if (fd < 0) {
            /* EACCES, ENOENT (removed), ELOOP/ENOTDIR (replaced), EMFILE: all survivable */
            note_unreadable(w, name, errno);
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_dev != w->root_dev || (uint64_t)st.st_ino != ino) {
            /* Replaced between fstatat and openat (or a mount appeared): do not enter. */
            close(fd);
            note_unreadable(w, name, ESTALE);
            continue;
        }
        size_t plen = f->path_len + 1 + strlen(name);
        if (push_frame(w, fd, plen, idx)) { close(fd); break; }
        read_dir(w);
        tick(w);
    }
    while (w->depth) pop_frame(w);
}

static void free_walk(Walk *w) {
    free(w->dirs);
    free(w->names);
    free(w->top);
    for (int i = 0; i < w->nsamples; i++) free(w->sample_paths[i]);
    free(w->sample_paths);
    free(w->sample_errnos);
    free(w->path);
    free(w->stack);
    free(w->dents);
    free(w->links);
}

static PyObject *build_result(Walk *w) {
    PyObject *dirs = PyList_New((Py_ssize_t)w->ndirs);
    PyObject *files = PyList_New(w->ntop);
    PyObject *samples = PyList_New(w->nsamples);
    PyObject *errors = PyDict_New();
    if (!dirs || !files || !samples || !errors) goto fail;
    for (size_t i = 0; i < w->ndirs; i++) {
        DirRec *d = &w->dirs[i];
        const char *nm = w->names + d->name_off;
        PyObject *t = Py_BuildValue("(NnKKK)", PyUnicode_DecodeFSDefault(nm), d->parent,
                                    (unsigned long long)d->own_bytes, (unsigned long long)d->own_inodes,
                                    (unsigned long long)d->own_files);
        if (!t) goto fail;
        PyList_SET_ITEM(dirs, (Py_ssize_t)i, t);
    }
    for (int i = 0; i < w->ntop; i++) {
        TopFile *f = &w->top[i];
        /* Same arithmetic as CPython's os.stat st_mtime, so both backends agree bit for bit. */
        double mtime = (double)f->mtime_sec + (double)f->mtime_nsec * 1e-9;
        PyObject *t = Py_BuildValue("(KnNKd)", (unsigned long long)f->seq, f->dir_index,
                                    PyUnicode_DecodeFSDefault(f->name), (unsigned long long)f->bytes, mtime);
        if (!t) goto fail;
        PyList_SET_ITEM(files, i, t);
    }
    for (int i = 0; i < w->nsamples; i++) {
        PyObject *t = Py_BuildValue("(Ni)", PyUnicode_DecodeFSDefault(w->sample_paths[i]), w->sample_errnos[i]);
        if (!t) goto fail;
        PyList_SET_ITEM(samples, i, t);
    }
    for (int e = 0; e < ERRNO_SLOTS; e++) {
        if (!w->errno_counts[e]) continue;
        PyObject *k = PyLong_FromLong(e), *v = PyLong_FromUnsignedLongLong(w->errno_counts[e]);
        if (!k || !v || PyDict_SetItem(errors, k, v) < 0) { Py_XDECREF(k); Py_XDECREF(v); goto fail; }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return Py_BuildValue("(NNKKNNO)", dirs, files, (unsigned long long)w->entries,
                         (unsigned long long)w->unreadable, samples, errors,
                         w->timed_out ? Py_True : Py_False);
fail:
    Py_XDECREF(dirs);
    Py_XDECREF(files);
    Py_XDECREF(samples);
    Py_XDECREF(errors);
    return NULL;
}

static PyObject *fastscan_walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *root_obj;
    int stat_files, top_n, sample_n, fd_depth;
    double budget_s;
    if (!PyArg_ParseTuple(args, "O&pdiii", PyUnicode_FSConverter, &root_obj, &stat_files, &budget_s,
                          &top_n, &sample_n, &fd_depth))
        return NULL;
    Walk w;
    memset(&w, 0, sizeof w);
    w.stat_files = stat_files;
    w.top_n = top_n < 0 ? 0 : (top_n > MAX_TOP_N ? MAX_TOP_N : top_n);
    w.sample_n = sample_n < 0 ? 0 : sample_n;
    w.fd_depth = fd_depth < 1 ? 1 : fd_depth;

    const char *root = PyBytes_AS_STRING(root_obj);
    size_t rlen = strlen(root);
    /* "/" walks as "" so children become "/etc", not "//etc". */
    while (rlen > 1 && root[rlen - 1] == '/') rlen--;
    size_t base = (rlen == 1 && root[0] == '/') ? 0 : rlen;
    if (grow((void **)&w.path, &w.path_cap, rlen + 256, 1)) { Py_DECREF(root_obj); return PyErr_NoMemory(); }
    memcpy(w.path, root, rlen);
    w.path[rlen] = 0;

    w.top = calloc(w.top_n ? w.top_n : 1, sizeof(TopFile));
    w.sample_paths = calloc(w.sample_n ? w.sample_n : 1, sizeof(char *));
    w.sample_errnos = calloc(w.sample_n ? w.sample_n : 1, sizeof(int));
    w.dents = malloc(DENTS_BUF_BYTES);
    if (!w.top || !w.sample_paths || !w.sample_errnos || !w.dents) {
        free_walk(&w);
        Py_DECREF(root_obj);
        return PyErr_NoMemory();
    }

    int fd, err = 0;
    struct stat st;
    Py_BEGIN_ALLOW_THREADS
    clock_gettime(CLOCK_MONOTONIC, &w.deadline);
    if (budget_s < 0) budget_s = 0;
    if (budget_s > 1e9) budget_s = 1e9;
    w.deadline.tv_sec += (time_t)budget_s;
    w.deadline.tv_nsec += (long)((budget_s - (double)(time_t)budget_s) * 1e9);
    if (w.deadline.tv_nsec >= 1000000000L) { w.deadline.tv_sec++; w.deadline.tv_nsec -= 1000000000L; }
    do { fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK); } while (fd < 0 && errno == EINTR);
    if (fd < 0) err = errno;
    else if (fstat(fd, &st) != 0) { err = errno; close(fd); }
    else {
        w.root_dev = st.st_dev;
        if (add_dir(&w, "", 0, -1, (uint64_t)st.st_blocks * 512) < 0) close(fd);
        else {
            w.path[base] = 0;
            run_walk(&w, fd);
        }
    }
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, PyTuple_GET_ITEM(args, 0));
    } else if (w.nomem) {
        PyErr_NoMemory();
    } else {
        result = build_result(&w);
    }
    free_walk(&w);
    Py_DECREF(root_obj);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", fastscan_walk, METH_VARARGS,
     "walk(root, stat_files, budget_s, top_n, sample_n, fd_depth) -> tuple; see module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastscan", "One-filesystem directory walk for prodx.scanners.space.", -1, methods,
};

PyMODINIT_FUNC PyInit__fastscan(void) { return PyModule_Create(&module); }
