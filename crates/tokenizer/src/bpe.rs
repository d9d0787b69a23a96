//! The byte-level BPE model: a vocabulary of byte strings and the merge rule, and the encoding
//! of one pre-tokenised piece.
//!
//! Two merge rules exist in the wild and differ on real vocabularies:
//! - tiktoken (`.tiktoken` files): two adjacent parts merge when their concatenated bytes are a
//!   token; the lowest rank (= id) merges first; a piece that is a token is returned directly.
//! - GPT-2 / HF (`merges` lists): two adjacent parts merge when the pair *of tokens* is in the
//!   merge list; the earliest merge goes first. `bc` + `a` -> `abc` is not allowed unless that
//!   exact pair was a merge, even when `abc` is a token.
//!
//! Both run through one generic merge loop over a `MergeTable`; ties go to the leftmost pair,
//! as in both references.

use rustc_hash::FxHashMap;

use crate::error::{Result, TokenizerError};

/// A token id. For tiktoken vocabularies the id is also the merge rank.
pub type Rank = u32;

/// The largest token id (or rank) a vocabulary may use: 4,194,303, ten times the largest
/// published vocabularies. Ids index tables, so a file that names id 4,000,000,000 is refused
/// rather than allocated for.
pub const MAX_ID: Rank = (1 << 22) - 1;

/// Pieces shorter than this use the quadratic scan (fast on the short pieces of real text:
/// a flat vector beats a heap); longer ones the heap, which keeps a piece with no split points
/// O(n log n) instead of O(n^2).
const HEAP_THRESHOLD: usize = 128;

/// Which merge rule the vocabulary follows (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeRule {
    /// tiktoken: merge by the rank of the concatenated bytes.
    ByteRanks,
    /// GPT-2 / HF: merge by the position of the token pair in the merge list.
    Pairs {
        /// Use a piece that is itself a token directly (HF's `ignore_merges`).
        ignore_merges: bool,
    },
}

/// The vocabulary and merge rule of a byte-level BPE.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// id -> bytes; `None` for ids that are not used
    tokens: Vec<Option<Box<[u8]>>>,
    /// bytes -> id
    ids: FxHashMap<Box<[u8]>, Rank>,
    /// the same for tokens of at most 15 bytes, keyed by the bytes packed into a `u128`: one
    /// probe with the key inline instead of a probe plus a pointer chase to the key's bytes
    short: ShortMap,
    /// the id of each single byte
    byte_ids: [Rank; 256],
    rule: MergeRule,
    /// (left, right) packed as `left << 32 | right` -> (priority, merged id); Pairs rule only
    pair_merges: FxHashMap<u64, (Rank, Rank)>,
    /// the merge list in priority order; Pairs rule only
    merges: Vec<(Rank, Rank)>,
}

/// Work done by the merge loop on one piece, for tests of its complexity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeWork {
    /// Merges performed.
    pub merges: usize,
    /// Candidate pairs examined (heap pushes and pops, or scan steps on the short path).
    pub steps: usize,
}

/// Token lookup keyed by short byte strings packed into a `u128` (length in the top byte).
#[derive(Clone, Debug, Default)]
struct ShortMap(FxHashMap<u128, Rank>);

/// Longest token kept in [`ShortMap`].
const SHORT: usize = 15;

impl ShortMap {
    #[inline(always)]
    fn key(bytes: &[u8]) -> u128 {
        let mut buf = [0u8; 16];
        buf[..bytes.len()].copy_from_slice(bytes);
        buf[15] = bytes.len() as u8;
        u128::from_le_bytes(buf)
    }

    fn build(ids: &FxHashMap<Box<[u8]>, Rank>) -> ShortMap {
        ShortMap(
            ids.iter()
                .filter(|(b, _)| b.len() <= SHORT)
                .map(|(b, &id)| (Self::key(b), id))
                .collect(),
        )
    }
}

/// Looks up a byte string: inline keys for short ones, the full map for the rest.
#[inline(always)]
fn lookup(short: &ShortMap, ids: &FxHashMap<Box<[u8]>, Rank>, bytes: &[u8]) -> Option<Rank> {
    if bytes.len() <= SHORT {
        short.0.get(&ShortMap::key(bytes)).copied()
    } else {
        ids.get(bytes).copied()
    }
}

#[inline(always)]
fn pack(a: Rank, b: Rank) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl Bpe {
    /// A tiktoken-style vocabulary: `ranks[i] = (bytes, rank)`; every single byte must be a token.
    pub fn from_ranks(ranks: impl IntoIterator<Item = (Vec<u8>, Rank)>) -> Result<Bpe> {
        let (tokens, ids) = Self::tables(ranks)?;
        let byte_ids = Self::byte_ids(&ids)?;
        Ok(Bpe {
            short: ShortMap::build(&ids),
            tokens,
            ids,
            byte_ids,
            rule: MergeRule::ByteRanks,
            pair_merges: FxHashMap::default(),
            merges: Vec::new(),
        })
    }

    /// A GPT-2 / HF-style vocabulary: token bytes with their ids, and the merge list in priority
    /// order as pairs of ids. Each merge must produce a token of the vocabulary.
    pub fn from_merges(
        vocab: impl IntoIterator<Item = (Vec<u8>, Rank)>,
        merges: Vec<(Rank, Rank)>,
        ignore_merges: bool,
    ) -> Result<Bpe> {
        let (tokens, ids) = Self::tables(vocab)?;
        let byte_ids = Self::byte_ids(&ids)?;
        let mut pair_merges = FxHashMap::default();
        for (prio, &(a, b)) in merges.iter().enumerate() {
            let bytes = |t: Rank| {
                tokens
                    .get(t as usize)
                    .and_then(|x| x.as_deref())
                    .ok_or(TokenizerError::BadVocab(format!(
                        "merge {prio} uses id {t}, which is not in the vocabulary"
                    )))
            };
            let mut joined = bytes(a)?.to_vec();
            joined.extend_from_slice(bytes(b)?);
            let Some(&new) = ids.get(joined.as_slice()) else {
                return Err(TokenizerError::BadVocab(format!(
                    "merge {prio} ({a} {b}) makes {:?}, which is not in the vocabulary",
                    String::from_utf8_lossy(&joined)
                )));
            };
            // the last occurrence wins, as in HF (its merge map is collected in list order)
            pair_merges.insert(pack(a, b), (prio as Rank, new));
        }
        Ok(Bpe {
            short: ShortMap::build(&ids),
            tokens,
            ids,
            byte_ids,
            rule: MergeRule::Pairs { ignore_merges },
            pair_merges,
            merges,
        })
    }

    #[allow(clippy::type_complexity)]
    fn tables(
        vocab: impl IntoIterator<Item = (Vec<u8>, Rank)>,
    ) -> Result<(Vec<Option<Box<[u8]>>>, FxHashMap<Box<[u8]>, Rank>)> {
        let mut tokens: Vec<Option<Box<[u8]>>> = Vec::new();
        let mut ids = FxHashMap::default();
        for (bytes, id) in vocab {
            if bytes.is_empty() {
                return Err(TokenizerError::BadVocab(format!(
                    "id {id} is the empty string"
                )));
            }
            if id > MAX_ID {
                return Err(TokenizerError::BadVocab(format!(
                    "id {id} is above the limit of {MAX_ID} (vocabularies have at most a few \
                     hundred thousand tokens)"
                )));
            }
            let i = id as usize;
            if i >= tokens.len() {
                tokens.resize(i + 1, None);
            }
            if tokens[i].is_some() {
                return Err(TokenizerError::BadVocab(format!("id {id} appears twice")));
            }
            let b: Box<[u8]> = bytes.into_boxed_slice();
            if let Some(other) = ids.insert(b.clone(), id) {
                return Err(TokenizerError::BadVocab(format!(
                    "{:?} has two ids, {other} and {id}",
                    String::from_utf8_lossy(&b)
                )));
            }
            tokens[i] = Some(b);
        }
        Ok((tokens, ids))
    }

    fn byte_ids(ids: &FxHashMap<Box<[u8]>, Rank>) -> Result<[Rank; 256]> {
        let mut out = [0; 256];
        for (b, o) in out.iter_mut().enumerate() {
            *o = *ids.get(&[b as u8][..]).ok_or_else(|| {
                TokenizerError::BadVocab(format!(
                    "byte 0x{b:02x} is not a token: a byte-level BPE needs all 256 bytes"
                ))
            })?;
        }
        Ok(out)
    }

    /// The merge rule.
    pub fn rule(&self) -> &MergeRule {
        &self.rule
    }

    /// One past the largest id.
    pub fn id_end(&self) -> usize {
        self.tokens.len()
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens (never true for a valid byte-level BPE).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The bytes of a token.
    pub fn token_bytes(&self, id: Rank) -> Option<&[u8]> {
        self.tokens.get(id as usize).and_then(|t| t.as_deref())
    }

    /// The id of a byte string, if it is a token.
    pub fn token_id(&self, bytes: &[u8]) -> Option<Rank> {
        lookup(&self.short, &self.ids, bytes)
    }

    /// The id of a single byte.
    pub fn byte_id(&self, byte: u8) -> Rank {
        self.byte_ids[byte as usize]
    }

    /// All `(bytes, id)` pairs, by id.
    pub fn vocab(&self) -> impl Iterator<Item = (&[u8], Rank)> {
        self.tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_deref().map(|b| (b, i as Rank)))
    }

    /// The merge list in priority order. For a tiktoken vocabulary it is derived: each token
    /// (by rank) is encoded with the lower ranks only, which must give exactly two parts; a
    /// token for which it does not is an error (the vocabulary is not a merge list).
    pub fn merges(&self) -> Result<Vec<(Rank, Rank)>> {
        match self.rule {
            MergeRule::Pairs { .. } => Ok(self.merges.clone()),
            MergeRule::ByteRanks => {
                let mut out = Vec::new();
                for (bytes, id) in self.vocab() {
                    if bytes.len() < 2 {
                        continue;
                    }
                    let table = ByteTable {
                        short: &self.short,
                        ids: &self.ids,
                        below: id,
                    };
                    let mut parts = Vec::new();
                    merge_small(bytes, &self.byte_ids, &table, &mut parts);
                    match parts[..] {
                        [a, b] => out.push((a, b)),
                        _ => {
                            return Err(TokenizerError::BadVocab(format!(
                                "token {id} is not the merge of two lower-ranked tokens"
                            )))
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Appends the ids of one pre-tokenised piece to `out`.
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<Rank>) {
        match piece.len() {
            0 => return,
            1 => return out.push(self.byte_ids[piece[0] as usize]),
            _ => {}
        }
        let direct = match self.rule {
            MergeRule::ByteRanks => true,
            MergeRule::Pairs { ignore_merges } => ignore_merges,
        };
        if direct {
            if let Some(id) = lookup(&self.short, &self.ids, piece) {
                return out.push(id);
            }
        }
        self.merge_piece(piece, out);
    }

    fn merge_piece(&self, piece: &[u8], out: &mut Vec<Rank>) -> MergeWork {
        match self.rule {
            MergeRule::ByteRanks => {
                let t = ByteTable {
                    short: &self.short,
                    ids: &self.ids,
                    below: Rank::MAX,
                };
                if piece.len() < HEAP_THRESHOLD {
                    merge_small(piece, &self.byte_ids, &t, out)
                } else {
                    merge_heap(piece, &self.byte_ids, &t, out)
                }
            }
            MergeRule::Pairs { .. } => {
                let t = PairTable(&self.pair_merges);
                if piece.len() < HEAP_THRESHOLD {
                    merge_small(piece, &self.byte_ids, &t, out)
                } else {
                    merge_heap(piece, &self.byte_ids, &t, out)
                }
            }
        }
    }

    /// Encodes one piece through the merge loop (never the whole-piece shortcut) and reports
    /// the work done; used to test that work grows linearly with the piece length.
    pub fn merge_work(&self, piece: &[u8]) -> (Vec<Rank>, MergeWork) {
        let mut out = Vec::new();
        let w = self.merge_piece(piece, &mut out);
        (out, w)
    }

    /// Total byte length of a run of ids (unknown ids count 0); a cheap check that an encoding
    /// covers its input.
    pub fn bytes_len(&self, ids: &[Rank]) -> usize {
        ids.iter()
            .map(|&i| self.token_bytes(i).map_or(0, <[u8]>::len))
            .sum()
    }

    /// The straightforward reference merge: repeatedly merge the lowest-priority pair, scanning
    /// all pairs each time (quadratic). Used by tests to check both fast paths.
    pub fn encode_piece_reference(&self, piece: &[u8]) -> Vec<Rank> {
        let mut parts: Vec<Rank> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let byte_len = |t: Rank| self.token_bytes(t).map_or(0, |b| b.len());
        loop {
            let mut best: Option<(Rank, usize, Rank)> = None;
            let mut start = 0;
            for i in 0..parts.len().saturating_sub(1) {
                let (a, b) = (parts[i], parts[i + 1]);
                let cand = match self.rule {
                    MergeRule::ByteRanks => {
                        let end = start + byte_len(a) + byte_len(b);
                        self.ids.get(&piece[start..end]).map(|&r| (r, r))
                    }
                    MergeRule::Pairs { .. } => self.pair_merges.get(&pack(a, b)).copied(),
                };
                if let Some((p, new)) = cand {
                    if best.is_none_or(|(bp, _, _)| p < bp) {
                        best = Some((p, i, new));
                    }
                }
                start += byte_len(a);
            }
            let Some((_, i, new)) = best else { break };
            parts[i] = new;
            parts.remove(i + 1);
        }
        parts
    }
}

/// What the merge loop asks of a vocabulary.
trait MergeTable {
    /// Priority and resulting id of merging `piece[a..b]` (id `ta`) with `piece[b..c]` (id `tb`).
    fn merge(&self, piece: &[u8], a: usize, c: usize, ta: Rank, tb: Rank) -> Option<(Rank, Rank)>;
}

/// tiktoken's rule; `below` limits the ranks (for deriving merges).
struct ByteTable<'a> {
    short: &'a ShortMap,
    ids: &'a FxHashMap<Box<[u8]>, Rank>,
    below: Rank,
}

impl MergeTable for ByteTable<'_> {
    #[inline(always)]
    fn merge(&self, piece: &[u8], a: usize, c: usize, _: Rank, _: Rank) -> Option<(Rank, Rank)> {
        match lookup(self.short, self.ids, &piece[a..c]) {
            Some(r) if r < self.below => Some((r, r)),
            _ => None,
        }
    }
}

/// The merge-list rule.
struct PairTable<'a>(&'a FxHashMap<u64, (Rank, Rank)>);

impl MergeTable for PairTable<'_> {
    #[inline(always)]
    fn merge(&self, _: &[u8], _: usize, _: usize, ta: Rank, tb: Rank) -> Option<(Rank, Rank)> {
        self.0.get(&pack(ta, tb)).copied()
    }
}

/// A part of a piece during merging.
#[derive(Clone, Copy)]
struct Part {
    start: usize,
    id: Rank,
    /// priority of merging with the next part (`Rank::MAX`: none)
    prio: Rank,
    /// id that merge makes
    new: Rank,
}

/// Quadratic merge for short pieces: a flat vector of parts, a linear scan for the best pair.
fn merge_small<T: MergeTable>(
    piece: &[u8],
    byte_ids: &[Rank; 256],
    t: &T,
    out: &mut Vec<Rank>,
) -> MergeWork {
    let n = piece.len();
    let mut work = MergeWork::default();
    let mut parts: Vec<Part> = Vec::with_capacity(n + 1);
    for (i, &b) in piece.iter().enumerate() {
        parts.push(Part {
            start: i,
            id: byte_ids[b as usize],
            prio: Rank::MAX,
            new: 0,
        });
    }
    // sentinel: the end of the last part
    parts.push(Part {
        start: n,
        id: 0,
        prio: Rank::MAX,
        new: 0,
    });
    let set = |parts: &mut Vec<Part>, i: usize| {
        if i + 2 < parts.len() {
            let (p, q, r) = (parts[i], parts[i + 1], parts[i + 2]);
            let m = t.merge(piece, p.start, r.start, p.id, q.id);
            let (prio, new) = m.unwrap_or((Rank::MAX, 0));
            parts[i].prio = prio;
            parts[i].new = new;
        } else {
            parts[i].prio = Rank::MAX;
        }
    };
    for i in 0..n.saturating_sub(1) {
        set(&mut parts, i);
    }
    loop {
        let mut best = (Rank::MAX, 0usize);
        for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
            // strict `<` keeps the leftmost of equal priorities
            if p.prio < best.0 {
                best = (p.prio, i);
            }
        }
        work.steps += parts.len();
        if best.0 == Rank::MAX {
            break;
        }
        let i = best.1;
        parts[i].id = parts[i].new;
        parts.remove(i + 1);
        work.merges += 1;
        set(&mut parts, i);
        if i > 0 {
            set(&mut parts, i - 1);
        }
    }
    out.extend(parts[..parts.len() - 1].iter().map(|p| p.id));
    work
}

/// Heap merge for long pieces: parts in a doubly linked list over byte positions (one record
/// per position, so a merge touches few cache lines), candidate pairs in a min-heap of `u64`
/// keys `priority << 32 | start`, so equal priorities go leftmost. Each part records the
/// priority and result of the pair it starts; a popped key is stale, and skipped, unless its
/// priority is still that record's. A stale key cannot carry the current priority: the same
/// priority means the same token (or the same merge-list entry), hence the same byte length,
/// hence the same pair.
fn merge_heap<T: MergeTable>(
    piece: &[u8],
    byte_ids: &[Rank; 256],
    t: &T,
    out: &mut Vec<Rank>,
) -> MergeWork {
    const NONE: u32 = u32::MAX;
    #[derive(Clone, Copy)]
    struct Node {
        /// start of the next part (`n` at the end)
        next: u32,
        /// start of the previous part (`NONE` for the first)
        prev: u32,
        id: Rank,
        /// priority of merging with the next part; `Rank::MAX` for none (or a merged-away part)
        prio: Rank,
        /// the id that merge makes
        new: Rank,
    }
    let n = piece.len();
    let mut work = MergeWork::default();
    let mut nodes: Vec<Node> = piece
        .iter()
        .enumerate()
        .map(|(i, &b)| Node {
            next: i as u32 + 1,
            prev: (i as u32).wrapping_sub(1),
            id: byte_ids[b as usize],
            prio: Rank::MAX,
            new: 0,
        })
        .collect();
    // recomputes the candidate pair starting at part `i`; its heap key if there is one
    let refresh = |nodes: &mut Vec<Node>, i: u32| -> Option<u64> {
        let iu = i as usize;
        let j = nodes[iu].next as usize;
        nodes[iu].prio = Rank::MAX;
        if j >= n {
            return None;
        }
        let c = nodes[j].next as usize;
        let (prio, new) = t.merge(piece, iu, c, nodes[iu].id, nodes[j].id)?;
        nodes[iu].prio = prio;
        nodes[iu].new = new;
        Some((prio as u64) << 32 | i as u64)
    };
    // built in one O(n) heapify rather than n pushes
    let initial: Vec<u64> = (0..n.saturating_sub(1) as u32)
        .filter_map(|i| refresh(&mut nodes, i))
        .collect();
    work.steps += initial.len();
    let mut heap = QuadHeap::from_vec(initial);
    while let Some(key) = heap.pop() {
        work.steps += 1;
        let (prio, i) = ((key >> 32) as Rank, key as u32 as usize);
        if nodes[i].prio != prio {
            continue;
        }
        // merge part i with the next part j
        let j = nodes[i].next as usize;
        let c = nodes[j].next;
        nodes[i].id = nodes[i].new;
        nodes[i].next = c;
        nodes[j].prio = Rank::MAX;
        if (c as usize) < n {
            nodes[c as usize].prev = i as u32;
        }
        work.merges += 1;
        if let Some(k) = refresh(&mut nodes, i as u32) {
            heap.push(k);
            work.steps += 1;
        }
        let p = nodes[i].prev;
        if p != NONE {
            if let Some(k) = refresh(&mut nodes, p) {
                heap.push(k);
                work.steps += 1;
            }
        }
    }
    let mut i = 0usize;
    while i < n {
        out.push(nodes[i].id);
        i = nodes[i].next as usize;
    }
    work
}

/// A 4-ary min-heap. On the heap of a long piece (a million entries) popping is most of the
/// time, and it is bound by cache misses: four children per node halve the depth, and the four
/// children of a node share a cache line. `std`'s binary heap took ~50% of the time on a 1 MB
/// piece in `perf`.
struct QuadHeap<T: Ord + Copy> {
    v: Vec<T>,
}

impl<T: Ord + Copy> QuadHeap<T> {
    fn from_vec(v: Vec<T>) -> Self {
        let mut h = QuadHeap { v };
        if h.v.len() > 1 {
            for i in (0..=(h.v.len() - 2) / 4).rev() {
                h.sift_down(i);
            }
        }
        h
    }

    fn push(&mut self, x: T) {
        let mut i = self.v.len();
        self.v.push(x);
        while i > 0 {
            let parent = (i - 1) / 4;
            if self.v[parent] <= x {
                break;
            }
            self.v[i] = self.v[parent];
            i = parent;
        }
        self.v[i] = x;
    }

    fn pop(&mut self) -> Option<T> {
        let last = self.v.pop()?;
        if self.v.is_empty() {
            return Some(last);
        }
        let top = self.v[0];
        self.v[0] = last;
        self.sift_down(0);
        Some(top)
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.v.len();
        let x = self.v[i];
        loop {
            let first = 4 * i + 1;
            if first >= n {
                break;
            }
            let mut best = first;
            for c in first + 1..(first + 4).min(n) {
                if self.v[c] < self.v[best] {
                    best = c;
                }
            }
            if self.v[best] >= x {
                break;
            }
            self.v[i] = self.v[best];
            i = best;
        }
        self.v[i] = x;
    }
}

#[cfg(test)]
mod tests {
    use super::QuadHeap;

    /// Every pop of the 4-ary heap is the minimum of what it holds, through heapify, pushes and
    /// pops interleaved (checked against a plain vector).
    #[test]
    fn quad_heap_pops_the_minimum() {
        let mut x = 12345u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as u32
        };
        for n in [0usize, 1, 2, 5, 17, 1000] {
            let mut mirror: Vec<u32> = (0..n).map(|_| rnd()).collect();
            let mut h = QuadHeap::from_vec(mirror.clone());
            for step in 0..3 * n {
                if step < n && step % 2 == 0 {
                    let e = rnd();
                    h.push(e);
                    mirror.push(e);
                } else {
                    let got = h.pop();
                    let want = mirror.iter().copied().enumerate().min_by_key(|&(_, v)| v);
                    assert_eq!(got, want.map(|(_, v)| v), "n = {n}");
                    if let Some((k, _)) = want {
                        mirror.swap_remove(k);
                    }
                }
            }
            assert!(mirror.is_empty() && h.pop().is_none());
        }
    }
}
