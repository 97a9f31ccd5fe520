/* hiredis replies built in an arena: a read of thousands of stream entries is
 * about a dozen reply objects and strings per entry, each a malloc and a free
 * with hiredis's own functions (a sixth of the aggregator's CPU in a profile).
 * Attached to a redisContext, its reader builds every reply in blocks that are
 * reused once no reply is alive: give a reply back with reply_arena_free(),
 * never with freeReplyObject(). One arena per context, used by one thread. */
#ifndef ARV_AGGREGATOR_REPLY_ARENA_H
#define ARV_AGGREGATOR_REPLY_ARENA_H

#include <stddef.h>

#include <hiredis/hiredis.h>

struct reply_arena_block;

struct reply_arena {
    struct reply_arena_block *first; /* blocks, reused in order */
    struct reply_arena_block *cur;   /* the one being filled */
    unsigned live;                   /* replies handed out and not yet freed */
    size_t kept;                     /* bytes of blocks kept for reuse */
};

/* Block size; a string longer than this gets a block of its own. */
#define REPLY_ARENA_BLOCK (256 * 1024)

/* Blocks kept across replies beyond this many bytes are freed when the arena
 * empties, so one huge reply does not pin its memory. */
#define REPLY_ARENA_KEEP (8 * 1024 * 1024)

/* An empty arena (no memory until the first reply). */
void reply_arena_init(struct reply_arena *a);

/* Makes `reader` (a redisContext's) build its replies in `a`, which must
 * outlive it. */
void reply_arena_attach(struct reply_arena *a, redisReader *reader);

/* Gives back a reply built in an arena (NULL is fine; the reply knows its
 * arena); the arena's memory is reused once every reply handed out is given
 * back. */
void reply_arena_free(redisReply *reply);

/* Frees every block. Safe on an initialised arena; no reply may be alive. */
void reply_arena_deinit(struct reply_arena *a);

/* Tests only: the allocator of blocks (NULL: malloc again). */
void reply_arena_set_malloc(void *(*fn)(size_t));

#endif
