/* hiredis reply objects in reusable blocks (see reply_arena.h). */
#include "reply_arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct reply_arena_block {
    struct reply_arena_block *next;
    size_t cap, used;
    alignas(max_align_t) char data[];
};

/* A root reply carries its arena, for hiredis's freeObject (which gets only
 * the object, and frees a root left half built by a protocol error). */
struct reply_root {
    struct reply_arena *arena;
    alignas(max_align_t) redisReply reply;
};

#define ALIGN(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

static void *(*block_malloc)(size_t) = malloc;

void reply_arena_set_malloc(void *(*fn)(size_t))
{
    block_malloc = fn ? fn : malloc;
}

static void *arena_alloc(struct reply_arena *a, size_t n)
{
    struct reply_arena_block *b = a->cur, *nb;
    size_t cap;

    n = ALIGN(n);
    if (b && b->cap - b->used >= n) {
        void *p = b->data + b->used;
        b->used += n;
        return p;
    }
    /* The next block kept from an earlier reply, if it is large enough. */
    nb = b ? b->next : a->first;
    if (!nb || nb->cap < n) {
        cap = n > REPLY_ARENA_BLOCK ? n : REPLY_ARENA_BLOCK;
        if (!(nb = block_malloc(sizeof(*nb) + cap)))
            return NULL;
        nb->cap = cap;
        nb->next = b ? b->next : a->first;
        if (b)
            b->next = nb;
        else
            a->first = nb;
        a->kept += cap;
    }
    nb->used = n;
    a->cur = nb;
    return nb->data;
}

/* Every reply is given back: the blocks are reused from the first; those
 * past REPLY_ARENA_KEEP bytes (the first always kept) are freed. */
static void arena_rewind(struct reply_arena *a)
{
    struct reply_arena_block **link = &a->first, *b;
    size_t kept = 0;

    while ((b = *link) && (kept == 0 || kept + b->cap <= REPLY_ARENA_KEEP)) {
        kept += b->cap;
        link = &b->next;
    }
    while ((b = *link)) {
        *link = b->next;
        free(b);
    }
    a->kept = kept;
    a->cur = NULL;
}

static struct reply_arena *task_arena(const redisReadTask *task)
{
    while (task->parent)
        task = task->parent;
    return task->privdata;
}

/* A reply of `type`, linked into its parent array (a root is counted live). */
static redisReply *new_reply(const redisReadTask *task, int type)
{
    struct reply_arena *a = task_arena(task);
    redisReply *r;

    if (task->parent) {
        if (!(r = arena_alloc(a, sizeof(*r))))
            return NULL;
        memset(r, 0, sizeof(*r));
        ((redisReply *)task->parent->obj)->element[task->idx] = r;
    } else {
        struct reply_root *root = arena_alloc(a, sizeof(*root));
        if (!root)
            return NULL;
        memset(root, 0, sizeof(*root));
        root->arena = a;
        r = &root->reply;
        a->live++;
    }
    r->type = type;
    return r;
}

static void free_object(void *obj);

/* Gives back a reply that new_reply() made but that is not handed to hiredis
 * (its string or elements could not be allocated): hiredis never frees what
 * it did not get, and a root left counted live would keep the arena from
 * being reused for good. An element is part of its root, which hiredis frees
 * after the failure. Returns NULL. */
static void *drop_reply(const redisReadTask *task, redisReply *r)
{
    if (!task->parent)
        free_object(r);
    return NULL;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = new_reply(task, task->type);
    char *buf;

    if (!r)
        return NULL;
    if (!(buf = arena_alloc(task_arena(task), len + 1)))
        return drop_reply(task, r);
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    redisReply *r = new_reply(task, REDIS_REPLY_ARRAY);

    if (!r)
        return NULL;
    if (elements > 0 &&
        !(r->element = arena_alloc(task_arena(task), (size_t)elements * sizeof(*r->element))))
        return drop_reply(task, r);
    r->elements = elements > 0 ? (size_t)elements : 0;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = new_reply(task, REDIS_REPLY_INTEGER);

    if (r)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return new_reply(task, REDIS_REPLY_NIL);
}

/* hiredis calls it on roots only. */
static void free_object(void *obj)
{
    struct reply_root *root;
    struct reply_arena *a;

    if (!obj)
        return;
    root = (struct reply_root *)((char *)obj - offsetof(struct reply_root, reply));
    a = root->arena;
    if (--a->live == 0)
        arena_rewind(a);
}

static redisReplyObjectFunctions arena_functions = {
    .createString = create_string,
    .createArray = create_array,
    .createInteger = create_integer,
    .createNil = create_nil,
    .freeObject = free_object,
};

void reply_arena_init(struct reply_arena *a)
{
    memset(a, 0, sizeof(*a));
}

void reply_arena_attach(struct reply_arena *a, redisReader *reader)
{
    reader->fn = &arena_functions;
    reader->privdata = a;
}

void reply_arena_free(redisReply *reply)
{
    free_object(reply);
}

void reply_arena_deinit(struct reply_arena *a)
{
    struct reply_arena_block *b = a->first, *next;

    while (b) {
        next = b->next;
        free(b);
        b = next;
    }
    memset(a, 0, sizeof(*a));
}
