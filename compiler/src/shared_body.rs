//! A compiled function's syntax, read in place in its file's syntax tree.
//!
//! The evaluator hands the type checker the body of every function a program reaches. Copying
//! each body out of its file's tree cost 2-6% of a compile (counter.lua: 0.58M of 9.3M
//! instructions), and while the copies and the trees were both alive they set the peak of the
//! compile's heap, which is paid for in page faults. So the trees are shared ([`Arc`]) and a
//! [`SharedBody`] points into one: the tree lives as long as any body in it is used, and is
//! freed when the last one is dropped (compile.rs drops them after lowering).
//!
//! full_moon's `Visitor` hands out references that cannot outlive the visit, so the pointer is
//! taken there (eval/index.rs) and kept next to the tree it points into.

use full_moon::ast::{Ast, FunctionBody};
use std::ptr::NonNull;
use std::sync::Arc;

/// A function body inside a shared syntax tree, which it keeps alive.
#[derive(Clone)]
pub struct SharedBody {
    /// Held, never read: keeps the tree `body` points into alive.
    _tree: Arc<Ast>,
    body: NonNull<FunctionBody>,
    /// Added to the byte positions of the tree's nodes to make them offsets in the file: 0
    /// for a tree of the whole file, more for a function parsed alone (`index::parsed_alone`).
    pub offset: usize,
}

// SAFETY: `body` points into the data of `tree` (the contract of `SharedBody::new`), which is
// immutable (only `&Ast` is ever taken from the `Arc`) and kept alive by `tree`; `Ast` itself
// is `Send` and `Sync`, so sharing a reference into it across threads is sound.
unsafe impl Send for SharedBody {}
unsafe impl Sync for SharedBody {}

// What the impls above rely on, checked by the compiler.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Ast>();
};

impl SharedBody {
    /// The body at `body`, in `tree`.
    ///
    /// # Safety
    ///
    /// `body` must point into `tree`'s data: taken from a reference obtained by walking
    /// `&**tree` (full_moon's visitors hand out such references, but with a lifetime too short
    /// to keep).
    pub unsafe fn new(tree: Arc<Ast>, body: NonNull<FunctionBody>) -> SharedBody {
        SharedBody {
            _tree: tree,
            body,
            offset: 0,
        }
    }

    /// The same body, its tree's positions `offset` bytes before the file's.
    pub fn with_offset(self, offset: usize) -> SharedBody {
        SharedBody { offset, ..self }
    }
}

/// A function's body as the evaluator hands it on: parsed already, or parsed when first read
/// (a stdlib function parsed alone: a module's table holds many functions a program reaches
/// but never calls, and only those it calls are type-checked).
#[derive(Clone)]
pub struct LazyBody(Arc<LazyInner>);

type Parse = Box<dyn Fn() -> Option<SharedBody> + Send + Sync>;

struct LazyInner {
    parsed: std::sync::OnceLock<Option<SharedBody>>,
    parse: Option<Parse>,
}

impl LazyBody {
    pub fn ready(body: SharedBody) -> LazyBody {
        LazyBody(Arc::new(LazyInner {
            parsed: std::sync::OnceLock::from(Some(body)),
            parse: None,
        }))
    }

    pub fn deferred(parse: impl Fn() -> Option<SharedBody> + Send + Sync + 'static) -> LazyBody {
        LazyBody(Arc::new(LazyInner {
            parsed: std::sync::OnceLock::new(),
            parse: Some(Box::new(parse)),
        }))
    }

    /// The body; None if its text did not parse (a bug: the evaluator found the function's
    /// site in that text).
    pub fn get(&self) -> Option<&SharedBody> {
        let inner = &*self.0;
        inner
            .parsed
            .get_or_init(|| inner.parse.as_ref().and_then(|parse| parse()))
            .as_ref()
    }
}

impl std::fmt::Debug for LazyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.parsed.get() {
            Some(Some(body)) => body.fmt(f),
            Some(None) => f.write_str("LazyBody(unparsable)"),
            None => f.write_str("LazyBody(not parsed yet)"),
        }
    }
}

impl std::ops::Deref for SharedBody {
    type Target = FunctionBody;

    fn deref(&self) -> &FunctionBody {
        // SAFETY: see the `Send` impl: the pointee is part of `self._tree`, alive and never
        // mutated while `self` exists.
        unsafe { self.body.as_ref() }
    }
}

impl std::fmt::Debug for SharedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use full_moon::ast::Stmt;

    #[test]
    fn a_body_outlives_every_other_handle_on_its_tree() {
        let tree = Arc::new(full_moon::parse("local function f(a, b) return a + b end").unwrap());
        let pointer = match tree.nodes().stmts().next() {
            Some(Stmt::LocalFunction(f)) => NonNull::from(f.body()),
            _ => panic!("not parsed as a local function"),
        };
        // SAFETY: taken from a walk of `&*tree` just above.
        let body = unsafe { SharedBody::new(Arc::clone(&tree), pointer) };
        drop(tree);
        assert_eq!(body.parameters().len(), 2);
        assert_eq!(body.block().to_string().trim(), "return a + b");
    }
}
