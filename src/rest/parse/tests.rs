//! Request-level tests: how the parts of an HTTP request combine into an [`ApiRequest`].

use super::*;

struct Req<'a> {
    method: &'a str,
    path: &'a [&'a str],
    path_schema: Option<&'a str>,
    query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

fn get(path: &'static [&'static str], query: &'static str) -> Req<'static> {
    Req {
        method: "GET",
        path,
        path_schema: None,
        query,
        headers: Vec::new(),
        body: b"",
    }
}

impl<'a> Req<'a> {
    fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }
    fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn body(mut self, b: &'a [u8]) -> Self {
        self.body = b;
        self
    }
    fn schema(mut self, s: &'a str) -> Self {
        self.path_schema = Some(s);
        self
    }
    fn parse_with(&self, config: &ParseConfig) -> Result<ApiRequest, ParseError> {
        parse_request(
            &RequestInput {
                method: self.method,
                path: self.path,
                path_schema: self.path_schema,
                query: self.query,
                headers: &self.headers,
                body: self.body,
            },
            config,
        )
    }
    fn parse(&self) -> Result<ApiRequest, ParseError> {
        self.parse_with(&config())
    }
    fn ok(&self) -> ApiRequest {
        self.parse()
            .unwrap_or_else(|e| panic!("{} {:?}?{}: {e:?}", self.method, self.path, self.query))
    }
    fn err(&self) -> ParseError {
        match self.parse() {
            Ok(r) => panic!("{} ?{} parsed: {r:?}", self.method, self.query),
            Err(e) => e,
        }
    }
}

fn config() -> ParseConfig {
    ParseConfig {
        schemas: vec!["public".into(), "api".into()],
        ..ParseConfig::default()
    }
}

const TODOS: &[&str] = &["todos"];
const RPC: &[&str] = &["rpc", "fn"];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn eq(name: &str, value: &str) -> Filter {
    Filter {
        field: Field::column(name),
        negated: false,
        operation: Operation::Simple {
            op: SimpleOp::Eq,
            value: value.into(),
        },
    }
}

#[test]
fn defaults_of_a_bare_read() {
    let r = get(TODOS, "").ok();
    assert_eq!(
        r.action,
        Action::Read {
            headers_only: false
        }
    );
    assert_eq!(r.target, Target::Relation("todos".into()));
    assert_eq!(r.schema, "public");
    assert!(!r.schema_explicit);
    assert_eq!(r.query, QueryParams::default());
    assert_eq!(r.query.select, vec![SelectItem::Star]);
    assert_eq!(r.range, Range::default());
    assert!(!r.range_requested);
    assert_eq!(r.accept, MediaType::Json);
    assert_eq!(r.preferences, Preferences::default());
    assert_eq!(r.payload, None);
    assert_eq!(r.content_type, None);
}

#[test]
fn methods_and_targets() {
    let cases: Vec<(&str, &[&str], Target, Action)> = vec![
        (
            "GET",
            TODOS,
            Target::Relation("todos".into()),
            Action::Read {
                headers_only: false,
            },
        ),
        (
            "HEAD",
            TODOS,
            Target::Relation("todos".into()),
            Action::Read { headers_only: true },
        ),
        (
            "POST",
            TODOS,
            Target::Relation("todos".into()),
            Action::Insert,
        ),
        (
            "PATCH",
            TODOS,
            Target::Relation("todos".into()),
            Action::Update,
        ),
        (
            "PUT",
            TODOS,
            Target::Relation("todos".into()),
            Action::SingleUpsert,
        ),
        (
            "DELETE",
            TODOS,
            Target::Relation("todos".into()),
            Action::Delete,
        ),
        (
            "OPTIONS",
            TODOS,
            Target::Relation("todos".into()),
            Action::Info,
        ),
        (
            "GET",
            &["todos", ""],
            Target::Relation("todos".into()),
            Action::Read {
                headers_only: false,
            },
        ),
        (
            "GET",
            RPC,
            Target::Routine("fn".into()),
            Action::Call {
                read_only: true,
                headers_only: false,
            },
        ),
        (
            "HEAD",
            RPC,
            Target::Routine("fn".into()),
            Action::Call {
                read_only: true,
                headers_only: true,
            },
        ),
        (
            "POST",
            RPC,
            Target::Routine("fn".into()),
            Action::Call {
                read_only: false,
                headers_only: false,
            },
        ),
        ("OPTIONS", RPC, Target::Routine("fn".into()), Action::Info),
        (
            "GET",
            &[],
            Target::Root,
            Action::Schema {
                headers_only: false,
            },
        ),
        (
            "GET",
            &[""],
            Target::Root,
            Action::Schema {
                headers_only: false,
            },
        ),
        (
            "HEAD",
            &[],
            Target::Root,
            Action::Schema { headers_only: true },
        ),
        // A table may be called `rpc`.
        (
            "GET",
            &["rpc"],
            Target::Relation("rpc".into()),
            Action::Read {
                headers_only: false,
            },
        ),
        (
            "GET",
            &["موارد"],
            Target::Relation("موارد".into()),
            Action::Read {
                headers_only: false,
            },
        ),
    ];
    for (method, path, target, action) in cases {
        let body: &[u8] = if ["POST", "PATCH", "PUT"].contains(&method) {
            b"{}"
        } else {
            b""
        };
        let r = Req {
            method,
            path,
            path_schema: None,
            query: "",
            headers: vec![],
            body,
        }
        .ok();
        assert_eq!((r.target, r.action), (target, action), "{method} {path:?}");
    }
    assert!(Action::Read {
        headers_only: false
    }
    .read_only());
    assert!(Action::Call {
        read_only: true,
        headers_only: false
    }
    .read_only());
    assert!(!Action::Call {
        read_only: false,
        headers_only: false
    }
    .read_only());
    assert!(!Action::Insert.read_only());
    assert!(Action::Insert.has_body() && !Action::Delete.has_body());
}

#[test]
fn method_and_path_errors() {
    let cases: Vec<(&str, &[&str], &str, u16)> = vec![
        ("PUT", RPC, "PGRST101", 405),
        ("PATCH", RPC, "PGRST101", 405),
        ("DELETE", RPC, "PGRST101", 405),
        ("TRACE", TODOS, "PGRST117", 405),
        ("get", TODOS, "PGRST117", 405),
        ("POST", &[], "PGRST117", 405),
        ("GET", &["a", "b"], "PGRST125", 404),
        ("GET", &["rpc", "fn", "x"], "PGRST125", 404),
        ("GET", &["", "x"], "PGRST125", 404),
    ];
    for (method, path, code, status) in cases {
        let e = Req {
            method,
            path,
            path_schema: None,
            query: "",
            headers: vec![],
            body: b"",
        }
        .parse()
        .unwrap_err();
        assert_eq!((e.code(), e.status()), (code, status), "{method} {path:?}");
    }
    let e = get(RPC, "").method("PUT").err();
    assert_eq!(e.message(), "Cannot use the PUT method on RPC");
    let e = get(TODOS, "").method("TRACE").err();
    assert_eq!(e.message(), "Unsupported HTTP method: TRACE");
}

#[test]
fn schema_from_profiles_and_path() {
    let r = get(TODOS, "").header("Accept-Profile", "api").ok();
    assert_eq!((r.schema.as_str(), r.schema_explicit), ("api", true));
    let r = get(TODOS, "")
        .method("HEAD")
        .header("accept-profile", "api")
        .ok();
    assert_eq!(r.schema, "api");
    // Writes read Content-Profile and ignore Accept-Profile.
    let r = get(TODOS, "")
        .method("DELETE")
        .header("Accept-Profile", "api")
        .ok();
    assert_eq!((r.schema.as_str(), r.schema_explicit), ("public", false));
    let r = get(TODOS, "")
        .method("DELETE")
        .header("Content-Profile", "api")
        .ok();
    assert_eq!(r.schema, "api");
    let r = get(RPC, "")
        .method("POST")
        .header("Content-Profile", "api")
        .ok();
    assert_eq!(r.schema, "api");
    // Reads ignore Content-Profile.
    let r = get(TODOS, "").header("Content-Profile", "api").ok();
    assert_eq!(r.schema, "public");
    // The path wins.
    let r = get(TODOS, "")
        .schema("api")
        .header("Accept-Profile", "public")
        .ok();
    assert_eq!((r.schema.as_str(), r.schema_explicit), ("api", true));

    let e = get(TODOS, "").header("Accept-Profile", "private").err();
    assert_eq!(
        e,
        ParseError::UnacceptableSchema {
            schema: "private".into(),
            exposed: strings(&["public", "api"]),
        }
    );
    assert_eq!((e.code(), e.status()), ("PGRST106", 406));
    assert_eq!(e.message(), "Invalid schema: private");
    assert_eq!(
        e.hint().as_deref(),
        Some("Only the following schemas are exposed: public, api")
    );
    assert_eq!(get(TODOS, "").schema("nope").err().code(), "PGRST106");
    // The default is the first configured schema.
    let cfg = ParseConfig {
        schemas: strings(&["api", "public"]),
        ..ParseConfig::default()
    };
    assert_eq!(
        get(TODOS, "").parse_with(&cfg).map(|r| r.schema),
        Ok("api".into())
    );
}

#[test]
fn reserved_parameters_versus_filters() {
    let r = get(
        TODOS,
        "select=id,clients(name)&order=id.desc&limit=10&offset=5&id=eq.1&or=(a.eq.1,b.eq.2)\
         &and=(c.eq.3)&not.or=(d.eq.4)&not.and=(e.eq.5)&clients.order=name&clients.limit=2\
         &clients.offset=1&clients.or=(x.eq.1)&clients.not.and=(y.eq.2)&clients.name=eq.x\
         &%22order%22=eq.7&data-%3E%3Ek=eq.8",
    )
    .ok();
    let q = &r.query;
    assert_eq!(q.select.len(), 2);
    assert_eq!(
        q.filters,
        vec![
            PathFilter {
                path: vec![],
                filter: eq("id", "1")
            },
            PathFilter {
                path: strings(&["clients"]),
                filter: eq("name", "x")
            },
            // A quoted `"order"` is a column, not the reserved word.
            PathFilter {
                path: vec![],
                filter: eq("order", "7")
            },
            PathFilter {
                path: vec![],
                filter: Filter {
                    field: Field {
                        name: "data".into(),
                        json_path: vec![JsonOp::DoubleArrow(JsonKey::Key("k".into()))],
                    },
                    negated: false,
                    operation: Operation::Simple {
                        op: SimpleOp::Eq,
                        value: "8".into()
                    },
                },
            },
        ]
    );
    let logic: Vec<(Vec<String>, bool, LogicOp)> = q
        .logic
        .iter()
        .map(|l| match &l.tree {
            LogicTree::Expr { negated, op, .. } => (l.path.clone(), *negated, *op),
            LogicTree::Filter(_) => panic!("leaf at the root"),
        })
        .collect();
    assert_eq!(
        logic,
        vec![
            (vec![], false, LogicOp::Or),
            (vec![], false, LogicOp::And),
            (vec![], true, LogicOp::Or),
            (vec![], true, LogicOp::And),
            (strings(&["clients"]), false, LogicOp::Or),
            (strings(&["clients"]), true, LogicOp::And),
        ]
    );
    assert_eq!(q.order.len(), 2);
    assert_eq!(q.order[0].path, Vec::<String>::new());
    assert_eq!(q.order[1].path, strings(&["clients"]));
    assert_eq!(
        q.ranges,
        vec![PathRange {
            path: strings(&["clients"]),
            range: Range {
                offset: 1,
                limit: Some(2)
            },
        }]
    );
    assert_eq!(
        r.range,
        Range {
            offset: 5,
            limit: Some(10)
        }
    );
    assert!(r.range_requested);
}

#[test]
fn nested_embed_paths() {
    let r = get(
        TODOS,
        "select=*,a(*,b(*))&a.b.x=eq.1&a.b.order=x.desc&a.b.limit=3&a.b.or=(x.eq.2)&a.offset=4",
    )
    .ok();
    assert_eq!(r.query.filters[0].path, strings(&["a", "b"]));
    assert_eq!(r.query.order[0].path, strings(&["a", "b"]));
    assert_eq!(r.query.logic[0].path, strings(&["a", "b"]));
    assert_eq!(
        r.query.ranges,
        vec![
            PathRange {
                path: strings(&["a", "b"]),
                range: Range {
                    offset: 0,
                    limit: Some(3)
                }
            },
            PathRange {
                path: strings(&["a"]),
                range: Range {
                    offset: 4,
                    limit: None
                }
            },
        ]
    );
}

#[test]
fn embedded_parameters_need_the_embed_in_select() {
    // (query, resource, alias)
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        ("clients.id=eq.1", "clients", None),
        ("select=id&clients.order=name", "clients", None),
        ("select=*,clients(*)&projects.limit=1", "projects", None),
        (
            "select=*,clients(*)&clients.projects.or=(a.eq.1)",
            "projects",
            None,
        ),
        (
            "select=*,c:clients(*)&clients.id=eq.1",
            "clients",
            Some(("clients", "c")),
        ),
        ("select=*,clients(*)&order=projects(name)", "projects", None),
        (
            "select=*,c:clients(*)&order=clients(name)",
            "clients",
            Some(("clients", "c")),
        ),
        ("select=*,a(b(*))&a.order=c(x)", "c", None),
    ];
    for (query, resource, alias) in cases {
        let e = get(TODOS, query).err();
        assert_eq!(
            e,
            ParseError::NotEmbedded {
                resource: resource.into(),
                alias: alias.map(|(n, a)| (n.to_string(), a.to_string())),
            },
            "{query}"
        );
        assert_eq!((e.code(), e.status()), ("PGRST108", 400));
    }
    // Aliases, spreads and related orders that exist are fine.
    for query in [
        "select=*,c:clients(*)&c.id=eq.1&c.order=id&c.limit=1",
        "select=*,...clients(name)&clients.name=eq.x",
        "select=*,clients!inner(*)&clients.id=eq.1",
        "select=*,clients(*)&order=clients(name).desc",
        "select=*,a(b(*))&a.order=b(x)",
        "select=*,clients(*)&clients=not.is.null",
    ] {
        assert!(get(TODOS, query).parse().is_ok(), "{query}");
    }
}

#[test]
fn first_select_columns_and_on_conflict_win() {
    let r = get(TODOS, "select=a&select=b").ok();
    assert_eq!(r.query.select, vec![SelectItem::column("a")]);
    let r = get(TODOS, "columns=a,b&on_conflict=c&columns=x")
        .method("POST")
        .body(b"[{\"a\":1},{\"b\":2}]")
        .ok();
    assert_eq!(r.query.columns, Some(strings(&["a", "b"])));
    assert_eq!(r.query.on_conflict, Some(strings(&["c"])));
    assert_eq!(get(TODOS, "select=").ok().query.select, vec![]);
    let e = get(TODOS, "columns=").method("POST").body(b"{}").err();
    assert_eq!(
        e.message(),
        "\"failed to parse columns parameter ()\" (line 1, column 1)"
    );
    let e = get(TODOS, "on_conflict=a,,b")
        .method("POST")
        .body(b"{}")
        .err();
    assert!(
        e.message()
            .starts_with("\"failed to parse on_conflict parameter (a,,b)\""),
        "{e:?}"
    );
}

#[test]
fn query_string_decoding() {
    let r = get(
        TODOS,
        "name=eq.John+Doe&b=eq.a%2Bb&select=%22a%2Cb%22,x&c=in.(%22Hebdon,John%22,%22Williams,Mary%22)&bad=eq.%zz&Unit%20Price=lt.200&flag&=eq.1",
    );
    let e = r.parse().unwrap_err();
    // `=eq.1` has an empty key and `flag` an empty value: both are grammar errors.
    assert_eq!(e.code(), "PGRST100");
    let r = get(
        TODOS,
        "name=eq.John+Doe&b=eq.a%2Bb&select=%22a%2Cb%22,x&c=in.(%22Hebdon,John%22,%22Williams,Mary%22)&bad=eq.%zz&Unit%20Price=lt.200",
    )
    .ok();
    let f: Vec<&Filter> = r.query.filters.iter().map(|f| &f.filter).collect();
    assert_eq!(f[0], &eq("name", "John Doe"));
    assert_eq!(f[1], &eq("b", "a+b"));
    assert_eq!(
        f[2].operation,
        Operation::In(strings(&["Hebdon,John", "Williams,Mary"]))
    );
    assert_eq!(f[3], &eq("bad", "%zz"));
    assert_eq!(f[4].field, Field::column("Unit Price"));
    assert_eq!(
        r.query.select,
        vec![SelectItem::column("a,b"), SelectItem::column("x")]
    );
    assert_eq!(percent_decode("%E2%9C%93+x", false), "✓+x");
    assert_eq!(percent_decode("%ff", true), "\u{fffd}");
    assert_eq!(percent_decode("100%", true), "100%");
    assert_eq!(
        query_pairs("a=1&&b&c=x=y"),
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), String::new()),
            ("c".to_string(), "x=y".to_string()),
        ]
    );
}

#[test]
fn grammar_errors_surface_with_their_parameter() {
    let cases = [
        (
            "select=id,",
            "\"failed to parse select parameter (id,)\" (line 1, column 4)",
        ),
        ("id=0", "\"failed to parse filter (0)\" (line 1, column 1)"),
        (
            "order=id.ac",
            "\"failed to parse order (id.ac)\" (line 1, column 4)",
        ),
        (
            "or=(a.eq.1",
            "\"failed to parse logic tree ((a.eq.1)\" (line 1, column 10)",
        ),
        (
            "not.or=(a.eq.1",
            "\"failed to parse logic tree ((a.eq.1)\" (line 1, column 14)",
        ),
        (
            "a->=eq.1",
            "\"failed to parse tree path (a->)\" (line 1, column 4)",
        ),
        (
            "limit=abc",
            "\"failed to parse limit parameter (abc)\" (line 1, column 1)",
        ),
        (
            "limit=1x",
            "\"failed to parse limit parameter (1x)\" (line 1, column 2)",
        ),
        (
            "offset=-1",
            "\"failed to parse offset parameter (-1)\" (line 1, column 1)",
        ),
        (
            "offset=",
            "\"failed to parse offset parameter ()\" (line 1, column 1)",
        ),
        (
            "limit=99999999999999999999",
            "\"failed to parse limit parameter (99999999999999999999)\" (line 1, column 1)",
        ),
        (
            "a->b.limit=1",
            "\"failed to parse tree path (a->b.limit)\" (line 1, column 1)",
        ),
    ];
    for (query, message) in cases {
        let e = get(TODOS, query).err();
        assert_eq!((e.code(), e.status()), ("PGRST100", 400), "{query}");
        assert_eq!(e.message(), message, "{query}");
    }
}

#[test]
fn limits_offsets_and_the_range_header() {
    let range = |query: &'static str, headers: &[(&'static str, &'static str)]| {
        let mut r = get(TODOS, query);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.ok().range
    };
    let r = |offset, limit| Range { offset, limit };
    type Headers = Vec<(&'static str, &'static str)>;
    let cases: Vec<(&str, Headers, Range)> = vec![
        ("", vec![], r(0, None)),
        ("limit=15&offset=30", vec![], r(30, Some(15))),
        ("limit=0", vec![], r(0, Some(0))),
        ("offset=3", vec![], r(3, None)),
        ("", vec![("Range", "0-19")], r(0, Some(20))),
        ("", vec![("Range", "10-")], r(10, None)),
        ("", vec![("Range", "items=5-5")], r(5, Some(1))),
        (
            "",
            vec![("Range-Unit", "items"), ("Range", "0-24")],
            r(0, Some(25)),
        ),
        // PostgREST intersects the header with the parameters.
        ("limit=5", vec![("Range", "0-9")], r(0, Some(5))),
        ("offset=5", vec![("Range", "0-9")], r(5, Some(5))),
        ("offset=20", vec![("Range", "0-9")], r(20, Some(0))),
        ("limit=100&offset=2", vec![("Range", "4-")], r(4, Some(98))),
        // Unreadable headers and other units are ignored, as PostgREST does.
        ("", vec![("Range", "abc")], r(0, None)),
        ("", vec![("Range", "-5")], r(0, None)),
        ("", vec![("Range", "1-2-3")], r(0, None)),
        ("", vec![("Range", "bytes=0-9")], r(0, None)),
        (
            "",
            vec![("Range-Unit", "bytes"), ("Range", "0-9")],
            r(0, None),
        ),
    ];
    for (query, headers, want) in cases {
        assert_eq!(range(query, &headers), want, "{query} {headers:?}");
    }
    // `Range` only applies to reads.
    let w = get(TODOS, "").method("DELETE").header("Range", "0-9").ok();
    assert_eq!((w.range, w.range_requested), (Range::default(), false));
    let w = get(RPC, "").header("Range", "1-2").ok();
    assert_eq!(w.range, r(1, Some(2)));

    let e = get(TODOS, "").header("Range", "10-5").err();
    assert_eq!(e, ParseError::InvalidRange(RangeError::LowerGtUpper));
    assert_eq!((e.code(), e.status()), ("PGRST103", 416));
    assert_eq!(
        e.details().as_deref(),
        Some("The lower boundary must be lower than or equal to the upper boundary in the Range header.")
    );
    let e = get(TODOS, "limit=-1").err();
    assert_eq!(e, ParseError::InvalidRange(RangeError::NegativeLimit));
    let e = get(TODOS, "select=*,c(*)&c.limit=-2").err();
    assert_eq!(e.code(), "PGRST103");
    // PUT takes no limit/offset.
    let put = |q| get(TODOS, q).method("PUT").body(b"{\"id\":1}");
    assert_eq!(put("id=eq.1&limit=1").err(), ParseError::PutLimitNotAllowed);
    assert_eq!(put("id=eq.1&offset=1").err().code(), "PGRST114");
    assert!(put("id=eq.1").parse().is_ok());
}

#[test]
fn range_intersection() {
    let r = |offset, limit| Range { offset, limit };
    let cases = [
        (r(0, None), r(0, None), r(0, None)),
        (r(0, Some(10)), r(0, None), r(0, Some(10))),
        (r(0, None), r(3, Some(2)), r(3, Some(2))),
        (r(0, Some(10)), r(5, Some(10)), r(5, Some(5))),
        (r(10, Some(5)), r(0, Some(3)), r(10, Some(0))),
        (
            r(u64::MAX - 1, Some(5)),
            r(0, None),
            r(u64::MAX - 1, Some(1)),
        ),
    ];
    for (a, b, want) in cases {
        assert_eq!(a.intersect(b), want, "{a:?} ∩ {b:?}");
        assert_eq!(b.intersect(a), want, "{b:?} ∩ {a:?}");
    }
    assert!(Range::default().is_all());
    assert!(!r(0, Some(1)).is_all());
}

#[test]
fn rpc_get_parameters_are_arguments_or_filters() {
    let mut r = get(
        RPC,
        "a=1&b=eq.2&select=x,y&v=1&v=2&data->k=eq.3&not-a-column=7&order=x&limit=5",
    )
    .ok();
    // Unambiguous: a JSON path can only be a filter.
    assert_eq!(r.query.filters.len(), 1);
    let names: Vec<&str> = r.query.rpc_params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "v", "v", "not-a-column"]);
    assert!(r.query.rpc_params[0].filter.is_none());
    assert_eq!(
        r.query.rpc_params[1].filter,
        Some(PathFilter {
            path: vec![],
            filter: eq("b", "2")
        })
    );
    assert_eq!(
        r.range,
        Range {
            offset: 0,
            limit: Some(5)
        }
    );

    let args = ["a", "v", "not-a-column"];
    r.resolve_rpc_params(|n| args.contains(&n)).unwrap();
    assert_eq!(
        r.query.rpc_args,
        vec![
            ("a".to_string(), "1".to_string()),
            ("v".to_string(), "1".to_string()),
            ("v".to_string(), "2".to_string()),
            ("not-a-column".to_string(), "7".to_string()),
        ]
    );
    assert_eq!(r.query.filters.len(), 2);
    assert_eq!(r.query.filters[1].filter, eq("b", "2"));
    assert!(r.query.rpc_params.is_empty());

    // A parameter that is no argument must be a valid filter.
    let mut r = get(RPC, "a=1").ok();
    let e = r.resolve_rpc_params(|_| false).unwrap_err();
    assert_eq!(
        e.message(),
        "\"failed to parse filter (1)\" (line 1, column 1)"
    );

    // POST calls take arguments from the body: query parameters are filters.
    let r = get(RPC, "a=eq.1").method("POST").body(b"{\"x\":1}").ok();
    assert!(r.query.rpc_params.is_empty());
    assert_eq!(r.query.filters[0].filter, eq("a", "1"));
    assert!(get(RPC, "a=1").method("POST").body(b"{}").parse().is_err());
}

#[test]
fn preferences_come_from_every_prefer_header() {
    let r = get(TODOS, "")
        .method("POST")
        .header("Prefer", "return=representation")
        .header("prefer", "count=exact, resolution=merge-duplicates")
        .header("PREFER", "missing=default,tx=rollback,max-affected=10")
        .body(b"{}")
        .ok();
    let p = &r.preferences;
    assert_eq!(p.return_, Some(ReturnPref::Representation));
    assert_eq!(p.count, Some(CountPref::Exact));
    assert_eq!(p.resolution, Some(Resolution::MergeDuplicates));
    assert_eq!(p.missing, Some(Missing::Default));
    assert_eq!(p.tx, Some(TxEnd::Rollback));
    assert_eq!(p.max_affected, Some(10));
    let e = get(TODOS, "")
        .header("Prefer", "handling=strict, foo, bar")
        .err();
    assert_eq!((e.code(), e.status()), ("PGRST122", 400));
    assert_eq!(
        e.details().as_deref(),
        Some("Invalid preferences: foo, bar")
    );
    assert!(get(TODOS, "")
        .header("Prefer", "handling=lenient, foo, bar")
        .parse()
        .is_ok());
}

#[test]
fn accept_negotiation_per_action() {
    let accept = |method: &'static str, path: &'static [&'static str], accept: &'static str| {
        let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
        get(path, "")
            .method(method)
            .header("Accept", accept)
            .body(body)
            .parse()
            .map(|r| r.accept)
    };
    let object = MediaType::Object {
        nulls_stripped: false,
    };
    let cases: Vec<(&str, &[&str], &str, MediaType)> = vec![
        ("GET", TODOS, "application/json", MediaType::Json),
        ("GET", TODOS, "*/*", MediaType::Json),
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.object+json",
            object.clone(),
        ),
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.object+json;nulls=stripped",
            MediaType::Object {
                nulls_stripped: true,
            },
        ),
        ("GET", TODOS, "text/csv", MediaType::Csv),
        ("GET", TODOS, "application/geo+json", MediaType::GeoJson),
        ("GET", TODOS, "text/plain", MediaType::TextPlain),
        (
            "GET",
            TODOS,
            "application/octet-stream",
            MediaType::OctetStream,
        ),
        ("GET", TODOS, "text/unknowntype, text/csv", MediaType::Csv),
        (
            "GET",
            TODOS,
            "text/csv;q=0.2, application/json;q=0.8",
            MediaType::Json,
        ),
        // The plan is not offered (PostgREST's default, `db-plan-enabled` off): the next
        // acceptable type is chosen.
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+json, application/json;q=0.5",
            MediaType::Json,
        ),
        (
            "POST",
            TODOS,
            "application/vnd.pgrst.object+json",
            object.clone(),
        ),
        ("POST", TODOS, "text/csv", MediaType::Csv),
        ("POST", RPC, "text/xml", MediaType::TextXml),
        ("GET", &[], "*/*", MediaType::OpenApi),
        ("GET", &[], "application/openapi+json", MediaType::OpenApi),
        ("GET", &[], "application/json", MediaType::Json),
        (
            "OPTIONS",
            TODOS,
            "text/whatever",
            MediaType::Other("text/whatever".into()),
        ),
    ];
    for (method, path, header, want) in cases {
        assert_eq!(
            accept(method, path, header),
            Ok(want),
            "{method} {path:?} {header}"
        );
    }
    let cases: Vec<(&str, &[&str], &str)> = vec![
        ("GET", TODOS, "text/unknowntype"),
        ("GET", TODOS, "application/xml"),
        ("POST", TODOS, "text/plain"),
        ("GET", &[], "text/csv"),
        ("GET", TODOS, "application/json;q=0"),
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+json; for=\"application/json\"; options=analyze",
        ),
        ("GET", RPC, "application/vnd.pgrst.plan+text"),
        ("POST", TODOS, "application/vnd.pgrst.plan"),
    ];
    for (method, path, header) in cases {
        let e = accept(method, path, header).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("PGRST107", 406),
            "{method} {header}"
        );
    }
    assert_eq!(
        accept("GET", TODOS, "text/unknowntype")
            .unwrap_err()
            .message(),
        "None of these media types are available: text/unknowntype"
    );
}

#[test]
fn plan_is_offered_when_enabled() {
    let cfg = ParseConfig {
        plan: true,
        ..config()
    };
    let accept = |method: &'static str, path: &'static [&'static str], accept: &'static str| {
        let body: &[u8] = if method == "GET" { b"" } else { b"{}" };
        get(path, "")
            .method(method)
            .header("Accept", accept)
            .body(body)
            .parse_with(&cfg)
            .map(|r| r.accept)
    };
    let plan = |json: bool, for_media: Option<&str>, options: Vec<PlanOption>| MediaType::Plan {
        json,
        for_media: for_media.map(str::to_string),
        options,
    };
    let cases: Vec<(&str, &[&str], &str, MediaType)> = vec![
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+json",
            plan(true, None, vec![]),
        ),
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan",
            plan(false, None, vec![]),
        ),
        // As supabase-js's `explain()` sends it (a trailing `;`).
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+text; for=\"application/vnd.pgrst.object+json\"; options=analyze|verbose;",
            plan(
                false,
                Some("application/vnd.pgrst.object+json"),
                vec![PlanOption::Analyze, PlanOption::Verbose],
            ),
        ),
        (
            "POST",
            TODOS,
            "application/vnd.pgrst.plan+json; for=\"text/csv\"",
            plan(true, Some("text/csv"), vec![]),
        ),
        (
            "PATCH",
            TODOS,
            "application/vnd.pgrst.plan+json",
            plan(true, None, vec![]),
        ),
        (
            "DELETE",
            TODOS,
            "application/vnd.pgrst.plan+json",
            plan(true, None, vec![]),
        ),
        (
            "POST",
            RPC,
            "application/vnd.pgrst.plan+text",
            plan(false, None, vec![]),
        ),
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+json; for=\"*/*\"",
            plan(true, Some("*/*"), vec![]),
        ),
    ];
    for (method, path, header, want) in cases {
        assert_eq!(
            accept(method, path, header),
            Ok(want),
            "{method} {path:?} {header}"
        );
    }
    // The media type it is `for` must be one the request could be answered with; the
    // OpenAPI document has no plan.
    for (method, path, header) in [
        (
            "GET",
            TODOS,
            "application/vnd.pgrst.plan+json; for=\"image/png\"",
        ),
        (
            "POST",
            TODOS,
            "application/vnd.pgrst.plan; for=\"text/plain\"",
        ),
        ("GET", &[][..], "application/vnd.pgrst.plan+json"),
    ] {
        let e = accept(method, path, header).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("PGRST107", 406),
            "{method} {header}"
        );
    }
}

#[test]
fn bodies_per_action_and_content_type() {
    let post = |path: &'static [&'static str], ct: Option<&'static str>, body: &'static [u8]| {
        let mut r = get(path, "").method("POST").body(body);
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        r.parse()
    };
    let r = post(TODOS, None, br#"{"a":1}"#).unwrap();
    assert!(matches!(&r.payload, Some(Payload::Json(j)) if j.keys == strings(&["a"])));
    assert_eq!(r.content_type, None);
    let r = post(
        TODOS,
        Some("application/json; charset=utf-8"),
        br#"[{"a":1},{"a":2}]"#,
    )
    .unwrap();
    assert!(matches!(&r.payload, Some(Payload::Json(j)) if j.kind == JsonKind::Array { len: 2 }));
    assert_eq!(r.content_type, Some(MediaType::Json));
    let r = post(TODOS, Some("text/csv"), b"name,age\nJ Doe,62\n").unwrap();
    assert!(matches!(&r.payload, Some(Payload::Csv(c)) if c.rows.len() == 1));
    let r = post(
        TODOS,
        Some("application/x-www-form-urlencoded"),
        b"name=John+Doe&age=50",
    )
    .unwrap();
    assert!(matches!(&r.payload, Some(Payload::Form(f)) if f.len() == 2));
    let r = post(RPC, None, b"").unwrap();
    assert!(matches!(&r.payload, Some(Payload::Json(j)) if j.raw == "{}"));
    let r = post(RPC, Some("text/plain"), b"hello").unwrap();
    assert!(matches!(
        &r.payload,
        Some(Payload::Raw {
            media: MediaType::TextPlain,
            ..
        })
    ));

    let e = post(TODOS, None, b"{").unwrap_err();
    assert_eq!(
        (e.code(), e.message().as_str()),
        ("PGRST102", "Empty or invalid json")
    );
    let e = post(TODOS, None, b"").unwrap_err();
    assert_eq!(e.code(), "PGRST102");
    let e = post(TODOS, None, br#"[{"a":1},{"b":1}]"#).unwrap_err();
    assert_eq!(e.message(), "All object keys must match");
    let e = post(TODOS, Some("application/xml"), b"<a/>").unwrap_err();
    assert_eq!(e.message(), "Content-Type not acceptable: application/xml");
    let e = post(TODOS, Some("text/plain"), b"x").unwrap_err();
    assert_eq!(e.message(), "Content-Type not acceptable: text/plain");

    for method in ["PATCH", "PUT"] {
        let r = get(TODOS, "id=eq.1")
            .method(method)
            .body(br#"{"a":1}"#)
            .ok();
        assert!(matches!(r.payload, Some(Payload::Json(_))), "{method}");
        let e = get(TODOS, "id=eq.1").method(method).body(b"nope").err();
        assert_eq!(e.code(), "PGRST102", "{method}");
    }
    // Bodies of actions that take none are not read at all.
    for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
        let r = get(TODOS, "").method(method).body(b"{not json").ok();
        assert_eq!(r.payload, None, "{method}");
    }
    assert_eq!(get(RPC, "").body(b"{not json").ok().payload, None);
}

#[test]
fn configured_limits() {
    let cfg = ParseConfig {
        limits: ParseLimits {
            max_query_len: 20,
            max_embed_depth: 2,
            max_logic_depth: 1,
        },
        ..config()
    };
    let q = |query: &'static str| get(TODOS, query).parse_with(&cfg);
    assert!(q("select=a(b(*))").is_ok());
    assert_eq!(
        q("select=a(b(c(*)))").map(|_| ()).unwrap_err().code(),
        "PGRST100"
    );
    assert!(q("or=(a.eq.1)").is_ok());
    assert_eq!(
        q("or=(and(a.eq.1))").map(|_| ()).unwrap_err().code(),
        "PGRST100"
    );
    let e = q("select=aaaaaaaaaaaaaaaaaaaa").map(|_| ()).unwrap_err();
    assert_eq!(e, ParseError::QueryTooLong { len: 27, max: 20 });
    assert_eq!((e.code(), e.status()), ("PGRST100", 414));
    assert!(ParseLimits::default().max_query_len >= 8 * 1024);
}

#[test]
fn aggregates_can_be_disabled() {
    let cfg = ParseConfig {
        aggregates: false,
        ..config()
    };
    for query in [
        "select=amount.sum()",
        "select=count()",
        "select=a,rel(x.avg())",
    ] {
        let e = get(TODOS, query).parse_with(&cfg).map(|_| ()).unwrap_err();
        assert_eq!(e, ParseError::AggregatesNotAllowed, "{query}");
    }
    assert!(get(TODOS, "select=count,rel(*)").parse_with(&cfg).is_ok());
    assert!(get(TODOS, "select=amount.sum()").parse().is_ok());
}

#[test]
fn postgrest_js_shaped_requests() {
    // What @supabase/postgrest-js sends for common builder chains.
    let r = get(
        &["countries"],
        "select=name%2Ccities%28name%29&name=ilike.%25an%25&order=name.asc.nullslast&cities.order=name.desc&offset=0&limit=10",
    )
    .header("Accept-Profile", "public")
    .header("Prefer", "count=exact")
    .ok();
    assert_eq!(
        r.query.filters[0].filter.operation,
        Operation::Simple {
            op: SimpleOp::Ilike,
            value: "%an%".into(),
        }
    );
    assert_eq!(
        r.range,
        Range {
            offset: 0,
            limit: Some(10)
        }
    );
    assert_eq!(r.preferences.count, Some(CountPref::Exact));

    let r = get(
        &["instruments"],
        "select=*&or=%28id.eq.2%2Cname.eq.guzheng%29&id=in.%281%2C2%29",
    )
    .ok();
    assert_eq!(r.query.logic.len(), 1);
    assert_eq!(
        r.query.filters[0].filter.operation,
        Operation::In(strings(&["1", "2"]))
    );

    let r = get(
        &["users"],
        "columns=%22username%22%2C%22status%22&on_conflict=username&select=*",
    )
    .method("POST")
    .header("Content-Type", "application/json")
    .header(
        "Prefer",
        "resolution=merge-duplicates,return=representation",
    )
    .body(br#"[{"username":"a","status":"ONLINE"},{"username":"b"}]"#)
    .ok();
    assert_eq!(r.query.columns, Some(strings(&["username", "status"])));
    assert_eq!(r.query.on_conflict, Some(strings(&["username"])));
    assert!(matches!(&r.payload, Some(Payload::Json(j)) if !j.uniform));

    let r = get(&["messages"], "select=*&id=eq.3")
        .method("GET")
        .header("Accept", "application/vnd.pgrst.object+json")
        .ok();
    assert_eq!(
        r.accept,
        MediaType::Object {
            nulls_stripped: false
        }
    );
}

#[test]
fn reserved_words_only_as_whole_components() {
    let r = get(
        TODOS,
        "speed_limit=eq.1&color=eq.red&border=eq.2&nand=eq.3&preorder=eq.4&soffset=eq.5&selected=eq.6",
    )
    .ok();
    let names: Vec<&str> = r
        .query
        .filters
        .iter()
        .map(|f| f.filter.field.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "speed_limit",
            "color",
            "border",
            "nand",
            "preorder",
            "soffset",
            "selected"
        ]
    );
    assert!(r.query.logic.is_empty() && r.query.order.is_empty() && r.range.is_all());
}
