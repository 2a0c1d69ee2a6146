package wsframe

import "sync"

// Payload buffers come from size-tiered pools so that a connection holds a
// buffer only while a frame or message is actually incomplete. Every pool
// stores *[]byte with len 0 and cap exactly equal to its tier size; a buffer
// whose cap matches no tier was allocated exactly and is left to the GC, so
// one huge message cannot pin memory in a pool.
var tierSizes = [...]int{128, 512, 4 << 10, 16 << 10, 64 << 10}

// maxTier is the largest pooled size, and also the most a Reader allocates
// on the word of a peer-declared length: above it a buffer grows only as
// payload bytes actually arrive (see growCap).
const maxTier = 64 << 10

var pools = [len(tierSizes)]sync.Pool{
	{New: func() any { return newBuf(tierSizes[0]) }},
	{New: func() any { return newBuf(tierSizes[1]) }},
	{New: func() any { return newBuf(tierSizes[2]) }},
	{New: func() any { return newBuf(tierSizes[3]) }},
	{New: func() any { return newBuf(tierSizes[4]) }},
}

func newBuf(n int) *[]byte {
	b := make([]byte, 0, n)
	return &b
}

// getBuf returns an empty buffer with room for at least n bytes: the
// smallest pooled tier that fits, or an exact, unpooled allocation above
// maxTier. Only the latter allocates in steady state.
func getBuf(n int) *[]byte {
	for i, size := range tierSizes {
		if n <= size {
			return pools[i].Get().(*[]byte)
		}
	}
	return newBuf(n)
}

// putBuf resets bp and returns it to its tier's pool. The caller must hold
// no other reference to *bp: handlers only see it during their call.
func putBuf(bp *[]byte) {
	c := cap(*bp)
	for i, size := range tierSizes {
		if c == size {
			*bp = (*bp)[:0]
			pools[i].Put(bp)
			return
		}
	}
}

// bufCap is the capacity getBuf(n) hands out.
func bufCap(n int) int {
	for _, size := range tierSizes {
		if n <= size {
			return size
		}
	}
	return n
}

// growCap is the capacity to give a data buffer that holds have bytes in a
// buffer of capacity cur and must take need bytes now, while the frame being
// read ends at end bytes (need <= end). The declared end is trusted up to
// maxTier; past that the capacity at most doubles what has arrived, so a
// peer that declares a large frame and then trickles it cannot make us
// reserve memory it has not sent.
func growCap(cur, need, end int) int {
	return max(need, min(end, max(2*cur, maxTier)))
}
