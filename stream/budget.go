package stream

// The hub's two memory budgets, TailBudget and ReplayBudget: see the
// package documentation.

import "sync"

const (
	// MinTailShare is the least fair share of Options.TailBudget a followed
	// stream is cut to, however many streams are followed: below it a busy
	// stream's live subscribers would read from the log on most commits.
	MinTailShare = 16 << 10
	// MinReplayPage is the allowance of a replay page once
	// Options.ReplayBudget is spent (a page still holds at least one
	// event). It is charged to the budget too, so the replay pages held
	// never pass the budget plus MinReplayPage per subscriber, beyond
	// events that alone are larger.
	MinReplayPage = 32 << 10
)

// share is a followed stream's fair share of the tail budget.
func (h *Hub) share() int {
	return max(h.opts.TailBudget/len(h.order), MinTailShare)
}

// sweep cuts the tails of the followed streams, round robin from where the
// last sweep stopped, until the total is within the budget. One round
// always suffices: cut to its share, every tail fits, since the shares add
// up to at most the budget; when they do not (the share is MinTailShare),
// the tails are emptied instead. A tail within its limit is passed over
// without taking its lock: only the commit hook changes a followed
// stream's tail. Sweeps are rare, since the committing stream is cut to its
// share first: one is needed only while other tails are over theirs (after
// more streams came to be followed), and then it stops as soon as the
// total fits. At worst (more than TailBudget/MinTailShare busy streams) a
// commit may pass over every followed stream.
func (h *Hub) sweep() {
	limit := h.share()
	if len(h.order)*limit > h.opts.TailBudget {
		limit = 0
	}
	for range len(h.order) {
		if h.tailCost.Load() <= int64(h.opts.TailBudget) {
			return
		}
		h.clock %= len(h.order)
		g := h.order[h.clock]
		h.clock++
		if g.tail.cost() <= limit {
			continue
		}
		g.mu.Lock()
		before := g.tail.cost()
		g.tail.shrink(limit)
		h.tailCost.Add(int64(g.tail.cost() - before))
		g.mu.Unlock()
	}
}

// Usage is what the hub holds against its memory budgets.
type Usage struct {
	// TailBytes is the memory of every followed stream's tail, as counted
	// against Options.TailBudget.
	TailBytes int
	// ReplayBytes is the memory of the replay pages being read or held
	// by subscribers, as counted against Options.ReplayBudget.
	ReplayBytes int
}

// Usage reports what the hub holds against its memory budgets now.
func (h *Hub) Usage() Usage {
	return Usage{TailBytes: int(h.tailCost.Load()), ReplayBytes: h.pages.held()}
}

// pageBudget is the hub's replay budget: the memory of the replay pages
// being read or handed out, across all subscriptions.
type pageBudget struct {
	mu   sync.Mutex
	used int
	max  int
}

// take reserves the allowance of one page of at most want bytes: want while
// the budget lasts, then what is left of it, and MinReplayPage once it is
// spent.
func (b *pageBudget) take(want int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(want, max(b.max-b.used, MinReplayPage))
	b.used += n
	return n
}

// add charges n more bytes, or gives -n back.
func (b *pageBudget) add(n int) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

func (b *pageBudget) held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// growPage returns buf with room for need bytes: doubled, as append would,
// but no larger than allowance unless need itself is.
func growPage(buf []byte, need, allowance int) []byte {
	c := max(2*cap(buf), need)
	if c > allowance {
		c = max(allowance, need)
	}
	return append(alloc(c), buf...)
}

// alloc returns an empty buffer of at least n bytes whose capacity is all
// the runtime allocated for it (rounded up to its size class or to whole
// pages), so that the budgets, which count capacity, count the memory.
func alloc(n int) []byte {
	return append([]byte(nil), make([]byte, n)...)[:0]
}
