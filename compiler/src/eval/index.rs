//! What the evaluator needs to know about a file's syntax, gathered in one visitor pass:
//! calls (for constructor spans and the variable a map is assigned to), table constructors
//! with named fields (record field order, which a Lua table forgets), `local x = { ... }`
//! (static table spans) and `<const>` attributes. Function sites (to find a compiled
//! function's syntax from the line Lua reports) are a second pass run only after the body.
//!
//! Walks are recursive; the nesting guard in `syntax` bounds their depth.

use crate::shared_body::SharedBody;
use crate::source::{FileId, Span};
use crate::syntax::span_of;
use full_moon::ast::{
    self, Ast, Call, Expression, Field, FunctionArgs, FunctionBody, FunctionCall, Index, Prefix, Suffix, Var,
};
use full_moon::node::Node;
use full_moon::tokenizer::{TokenReference, TokenType};
use full_moon::visitors::Visitor;
use std::collections::{HashMap, HashSet};
use std::ptr::NonNull;
use std::sync::Arc;

#[derive(Debug, PartialEq)]
pub(crate) struct CallSite {
    pub span: Span,
    pub start_line: usize,
    pub end_line: usize,
    /// The called name: `hash` in `map.hash{...}`, `require` in `require "x"`.
    pub callee: String,
    /// `x` in `local x = f()`, `x = f()` or `M.x = f()`.
    pub target: Option<String>,
    /// Named fields of table-constructor arguments: (field, span of its value).
    pub options: Vec<(String, Span)>,
}

/// A table constructor whose fields are all named: `{ a = "I4", ["b"] = "I8" }`.
#[derive(Debug, PartialEq)]
pub(crate) struct RecordSite {
    pub span: Span,
    /// Field names in source order, each with the span of its value.
    pub fields: Vec<(String, Span)>,
    /// The field names sorted, to compare with a Lua table's keys.
    pub sorted: Vec<String>,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct FileIndex {
    pub calls: Vec<CallSite>,
    pub records: Vec<RecordSite>,
    /// `local NAME = { ... }`: (NAME, span of the constructor).
    pub local_tables: Vec<(String, Span)>,
    /// Byte ranges of `<const>` attributes.
    pub consts: Vec<(usize, usize)>,
    /// Whether a plain `NAME = ...` assigns to a name that some `<const>` local has (scopes
    /// ignored): only then can Lua refuse the text for assigning to a constant, which is
    /// what compiling the text as written, besides the text without its `<const>`s, is for.
    /// (Not kept in the stdlib's prepared facts: no stdlib module assigns to a constant.)
    pub assigns_const_name: bool,
    /// The span of the chunk's final `return`, if any.
    pub return_span: Option<Span>,
}

impl FileIndex {
    pub fn build(file: FileId, ast: &Ast) -> FileIndex {
        let mut v = IndexVisitor {
            file,
            index: FileIndex::default(),
            targets: HashMap::new(),
            const_names: HashSet::new(),
            assigned_names: HashSet::new(),
        };
        v.visit_ast(ast);
        let mut index = v.index;
        index.assigns_const_name = !v.const_names.is_disjoint(&v.assigned_names);
        if let Some(ast::LastStmt::Return(ret)) = ast.nodes().last_stmt() {
            index.return_span = Some(span_of(file, ret));
        }
        index
    }

    /// The innermost call to `callee` whose lines cover `line` (Lua reports a call at the line
    /// where it starts, but accept any line of a multi-line call).
    pub fn call_at(&self, line: usize, callee: &str) -> Option<&CallSite> {
        self.calls
            .iter()
            .filter(|c| c.callee == callee && c.start_line <= line && line <= c.end_line)
            .min_by_key(|c| (c.start_line != line, c.span.end - c.span.start))
    }

    /// `text` with every `<const>` attribute blanked: the body is run without them so that
    /// constant locals become ordinary upvalues that compiled functions can be told about
    /// (Lua 5.4 folds `<const>` locals into the code and does not list them as upvalues).
    pub fn strip_consts(&self, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        for &(start, end) in &self.consts {
            for b in bytes.iter_mut().take(end.min(text.len())).skip(start) {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        // Only ASCII bytes of `<`, `const`, `>` and whitespace were replaced by spaces.
        String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
    }
}

struct IndexVisitor {
    file: FileId,
    index: FileIndex,
    /// Start byte of a call -> the name it is assigned to.
    targets: HashMap<usize, String>,
    /// Names declared `<const>`, and names assigned by a plain `NAME = ...`.
    const_names: HashSet<String>,
    assigned_names: HashSet<String>,
}

impl Visitor for IndexVisitor {
    fn visit_local_assignment(&mut self, node: &ast::LocalAssignment) {
        for (name, attribute) in node.names().iter().zip(node.attributes()) {
            if attribute.is_some_and(|a| ident(a.name()) == "const") {
                self.const_names.insert(ident(name));
            }
        }
        for (name, expr) in node.names().iter().zip(node.expressions().iter()) {
            let name = ident(name);
            match expr {
                Expression::FunctionCall(call) => {
                    self.targets.insert(span_of(self.file, call).start, name);
                }
                Expression::TableConstructor(table) => {
                    self.index.local_tables.push((name, span_of(self.file, table.as_ref())));
                }
                _ => {}
            }
        }
    }

    fn visit_assignment(&mut self, node: &ast::Assignment) {
        for var in node.variables() {
            if let Var::Name(name) = var {
                self.assigned_names.insert(ident(name));
            }
        }
        for (var, expr) in node.variables().iter().zip(node.expressions().iter()) {
            if let (Some(name), Expression::FunctionCall(call)) = (var_name(var), expr) {
                self.targets.insert(span_of(self.file, call).start, name);
            }
        }
    }

    fn visit_function_call(&mut self, call: &FunctionCall) {
        let span = span_of(self.file, call);
        let (start_line, end_line) = lines(call);
        let options = call_options(self.file, call);
        self.index.calls.push(CallSite {
            span,
            start_line,
            end_line,
            callee: callee_name(call),
            target: self.targets.get(&span.start).cloned(),
            options,
        });
    }

    fn visit_table_constructor(&mut self, table: &ast::TableConstructor) {
        let mut fields = Vec::new();
        for field in table.fields().iter() {
            match field_name(field) {
                Some((name, value)) => fields.push((name, span_of(self.file, value))),
                None => return,
            }
        }
        if fields.is_empty() {
            return;
        }
        let mut sorted: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
        sorted.sort();
        self.index.records.push(RecordSite {
            span: span_of(self.file, table),
            fields,
            sorted,
        });
    }

    fn visit_attribute(&mut self, attribute: &ast::lua54::Attribute) {
        if ident(attribute.name()) == "const" {
            let span = span_of(self.file, attribute);
            self.index.consts.push((span.start, span.end));
        }
    }
}

fn lines(node: &impl Node) -> (usize, usize) {
    match node.range() {
        Some((start, end)) => (start.line(), end.line()),
        None => (0, 0),
    }
}

fn ident(token: &TokenReference) -> String {
    match token.token_type() {
        TokenType::Identifier { identifier } => identifier.to_string(),
        _ => token.token().to_string(),
    }
}

/// The text of a string literal without escapes, or None.
fn plain_string(expr: &Expression) -> Option<String> {
    let Expression::String(token) = expr else { return None };
    match token.token_type() {
        TokenType::StringLiteral { literal, .. } if !literal.contains('\\') => Some(literal.to_string()),
        _ => None,
    }
}

/// `name = value` or `["name"] = value`.
fn field_name(field: &Field) -> Option<(String, &Expression)> {
    match field {
        Field::NameKey { key, value, .. } => Some((ident(key), value)),
        Field::ExpressionKey { key, value, .. } => Some((plain_string(key)?, value)),
        _ => None,
    }
}

fn var_name(var: &Var) -> Option<String> {
    match var {
        Var::Name(token) => Some(ident(token)),
        Var::Expression(e) => match e.suffixes().last()? {
            Suffix::Index(Index::Dot { name, .. }) => Some(ident(name)),
            _ => None,
        },
        _ => None,
    }
}

/// The name a call calls: the last name before its final argument list.
fn callee_name(call: &FunctionCall) -> String {
    let suffixes: Vec<&Suffix> = call.suffixes().collect();
    match suffixes.split_last() {
        Some((Suffix::Call(Call::MethodCall(m)), _)) => ident(m.name()),
        Some((Suffix::Call(Call::AnonymousCall(_)), rest)) => match rest.last() {
            Some(Suffix::Index(Index::Dot { name, .. })) => ident(name),
            Some(_) => String::new(),
            None => match call.prefix() {
                Prefix::Name(name) => ident(name),
                _ => String::new(),
            },
        },
        _ => String::new(),
    }
}

/// Named fields of the table constructors among a call's final arguments.
fn call_options(file: FileId, call: &FunctionCall) -> Vec<(String, Span)> {
    let args = match call.suffixes().last() {
        Some(Suffix::Call(Call::AnonymousCall(args))) => args,
        Some(Suffix::Call(Call::MethodCall(m))) => m.args(),
        _ => return Vec::new(),
    };
    let tables: Vec<&ast::TableConstructor> = match args {
        FunctionArgs::TableConstructor(t) => vec![t],
        FunctionArgs::Parentheses { arguments, .. } => arguments
            .iter()
            .filter_map(|e| match e {
                Expression::TableConstructor(t) => Some(t.as_ref()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    tables
        .into_iter()
        .flat_map(|t| t.fields().iter())
        .filter_map(|f| field_name(f).map(|(name, value)| (name, span_of(file, value))))
        .collect()
}

/// A function's definition in the syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FnSite {
    /// Line of the `function` keyword, of the parameters' `(`, and of `end`: Lua reports a
    /// function's `linedefined` as one of the first two and `lastlinedefined` as the third.
    pub keyword_line: usize,
    pub paren_line: usize,
    pub end_line: usize,
    /// From `function` to `end`.
    pub span: Span,
    /// `f` in `local function f`, `M.f` in `function M.f`; None for `function() ... end`.
    pub name: Option<String>,
    /// Position in the walk, to fetch the body later with [`shared_bodies`].
    pub ordinal: usize,
}

impl FnSite {
    pub fn matches(&self, line_defined: usize, last_line_defined: usize) -> bool {
        (self.keyword_line == line_defined || self.paren_line == line_defined) && self.end_line == last_line_defined
    }
}

/// Every function definition of a file, in walk order.
pub(crate) fn function_sites(file: FileId, ast: &Ast) -> Vec<FnSite> {
    let mut v = SiteVisitor {
        file,
        sites: Vec::new(),
        ordinal: 0,
        wanted: None,
        bodies: Vec::new(),
    };
    v.visit_ast(ast);
    v.sites
}

/// The bodies of the sites with the given ordinals, shared with their tree.
pub(crate) fn shared_bodies(file: FileId, tree: &Arc<Ast>, wanted: &HashSet<usize>) -> HashMap<usize, SharedBody> {
    let mut v = SiteVisitor {
        file,
        sites: Vec::new(),
        ordinal: 0,
        wanted: Some(wanted),
        bodies: Vec::new(),
    };
    v.visit_ast(tree);
    v.bodies
        .into_iter()
        // SAFETY: each pointer was taken from the walk of `&**tree` just above.
        .map(|(ordinal, body)| (ordinal, unsafe { SharedBody::new(Arc::clone(tree), body) }))
        .collect()
}

/// The body of a site of a file that was not parsed (a stdlib module whose syntax
/// facts were computed ahead of time), parsed alone: its text, with `_=` before an anonymous
/// function so that it is a statement. Its byte offsets are then the file's less a constant,
/// which the body carries (`SharedBody::offset`); the compiler reads positions only as byte
/// offsets, so full_moon's line and column numbers in this tree are never used. (Blank lines
/// and spaces before the text, to keep them too, cost a quarter of the parse: full_moon's
/// whitespace is dear; blanking the rest of the file instead costs more than parsing it.)
/// None if it does not parse that way.
pub(crate) fn parsed_alone(file: FileId, text: &str, site: &FnSite) -> Option<SharedBody> {
    let (start, end) = (site.span.start, site.span.end);
    let source = text.get(start..end)?;
    let prefix = if site.name.is_some() { "" } else { "_=" };
    let offset = start.checked_sub(prefix.len())?;
    let fragment = format!("{prefix}{source}");
    let parsed =
        std::panic::catch_unwind(|| full_moon::parse_fallible(&fragment, full_moon::LuaVersion::lua54())).ok()?;
    if !parsed.errors().is_empty() {
        return None;
    }
    let tree = Arc::new(parsed.into_ast());
    // Walk order visits a function before those inside it: the first site is this one.
    let (_, body) = shared_bodies(file, &tree, &HashSet::from([0])).into_iter().next()?;
    let body = body.with_offset(offset);
    let body_span = span_of(file, &*body);
    (body_span.end + offset == end && body_span.start + offset > start).then_some(body)
}

/// Both passes share this visitor so that ordinals agree.
struct SiteVisitor<'w> {
    file: FileId,
    sites: Vec<FnSite>,
    ordinal: usize,
    wanted: Option<&'w HashSet<usize>>,
    /// Where the wanted bodies are in the tree walked (full_moon's references do not outlive
    /// the visit).
    bodies: Vec<(usize, NonNull<FunctionBody>)>,
}

impl SiteVisitor<'_> {
    fn add(&mut self, keyword: &TokenReference, name: Option<String>, body: &FunctionBody) {
        let ordinal = self.ordinal;
        self.ordinal += 1;
        match self.wanted {
            Some(wanted) => {
                if wanted.contains(&ordinal) {
                    self.bodies.push((ordinal, NonNull::from(body)));
                }
            }
            None => {
                let keyword_span = span_of(self.file, keyword);
                let end_span = span_of(self.file, body.end_token());
                self.sites.push(FnSite {
                    keyword_line: keyword.token().start_position().line(),
                    paren_line: body.parameters_parentheses().tokens().0.token().start_position().line(),
                    end_line: body.end_token().token().start_position().line(),
                    span: keyword_span.to(end_span),
                    name,
                    ordinal,
                });
            }
        }
    }
}

impl Visitor for SiteVisitor<'_> {
    fn visit_local_function(&mut self, node: &ast::LocalFunction) {
        self.add(node.function_token(), Some(ident(node.name())), node.body());
    }

    fn visit_function_declaration(&mut self, node: &ast::FunctionDeclaration) {
        let name = node.name();
        let mut text: Vec<String> = name.names().iter().map(ident).collect();
        if let Some(method) = name.method_name() {
            let last = text.pop().unwrap_or_default();
            text.push(format!("{last}:{}", ident(method)));
        }
        self.add(node.function_token(), Some(text.join(".")), node.body());
    }

    fn visit_anonymous_function(&mut self, node: &ast::AnonymousFunction) {
        self.add(node.function_token(), None, node.body());
    }
}

#[cfg(test)]
mod tests {
    /// Lua's check of assignments to constants runs only where it can refuse something: the
    /// examples never assign to a constant's name, so their body is compiled once.
    #[test]
    fn only_an_assignment_to_a_constants_name_asks_for_luas_check() {
        let assigns = |text: &str| super::super::sandbox::syntax_of("t.lua", text).0.assigns_const_name;
        assert!(!assigns("local K <const> = 1\nlocal x = K\nx = 2\n"));
        assert!(!assigns("local K <const> = 1\nlocal t = {}\nt.K = 2\n"));
        assert!(assigns("local K <const> = 1\nlocal function f() K = 2 end\n"));
        assert!(assigns("local K <const> = 1\ndo local K = 3; K = 4 end\n"));
        assert!(!assigns(include_str!("../../../examples/cookie_guard.lua")));
    }
}
