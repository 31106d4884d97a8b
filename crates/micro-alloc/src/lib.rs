//! The `micro` binary's allocator: mimalloc. The gateway and the proxy allocate
//! small buffers and futures per request on several threads, where mimalloc is
//! markedly cheaper than glibc's malloc.
//!
//! Blocks whose alignment any `malloc` block has (8 bytes) are asked for with plain
//! `mi_malloc`; only larger alignments go through `mi_malloc_aligned`. The
//! `mimalloc` crate uses the aligned calls for everything, and for blocks over
//! 1 KiB (a boxed request future) those take mimalloc's slow path: over-allocate,
//! then align, on every request.
//!
//! ```
//! use micro_alloc::MiMalloc;
//!
//! #[global_allocator]
//! static ALLOCATOR: MiMalloc = MiMalloc;
//!
//! let answer = vec![0u8; 4096]; // a block from mimalloc
//! assert_eq!(answer.len(), 4096);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block `mi_malloc` returns has, whatever its size.
const PLAIN_ALIGN: usize = 8;

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

// SAFETY: every block comes from mimalloc with at least the layout's size and
// alignment, and goes back to mimalloc (`mi_free` takes aligned blocks too).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc takes any size; the alignment is a power of two (`Layout`).
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps
        // its alignment (plain blocks are always 8-aligned).
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned, zeroed
    /// when asked, and keeps its bytes when it grows.
    #[test]
    fn blocks_have_the_layouts_alignment() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 8, 24, 40, 100, 1000, 1025, 4000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: each block is used within its size and freed once.
                unsafe {
                    let block = MiMalloc.alloc_zeroed(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "size {size} align {align}");
                    assert!(std::slice::from_raw_parts(block, size)
                        .iter()
                        .all(|b| *b == 0));
                    block.write_bytes(7, size);
                    let grown = MiMalloc.realloc(block, layout, size * 2);
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "grown: size {size} align {align}"
                    );
                    assert!(std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|b| *b == 7));
                    MiMalloc.dealloc(grown, Layout::from_size_align(size * 2, align).unwrap());
                }
            }
        }
    }
}
