-- The fixture schema of the golden corpus (tests/it/rest_golden.rs). Modelled on the
-- examples of PostgREST's documentation (people, tsearch, countries, films/directors/
-- actors/roles, clients/projects/tasks, orders/addresses, employees, add_them …), written
-- for these tests. Every file of the corpus runs on a fresh copy of it.

-- Tables and Views: filters, select, JSON paths, ordering, pagination.
CREATE TABLE people (
  id int PRIMARY KEY,
  first_name text,
  last_name text,
  full_name text GENERATED ALWAYS AS (first_name || ' ' || last_name) STORED,
  age int,
  height int,
  grade int,
  student boolean,
  salary numeric(10, 2),
  birth_date date,
  category text,
  json_data jsonb
);
INSERT INTO people (id, first_name, last_name, age, height, grade, student, salary, birth_date, json_data) VALUES
  (1, 'John', 'Doe', 30, 180, 85, false, 90000, '1988-04-25',
   '{"blood_type": "A-", "age": 30, "phones": [{"country_code": "61", "number": "917-929-5745"}]}'),
  (2, 'Jane', 'Doe', 20, 165, 92, true, 120000, '1998-01-12',
   '{"blood_type": "O+", "age": 20, "phones": [{"country_code": "43", "number": "512-446-4988"}, {"country_code": "43", "number": "213-891-5979"}]}'),
  (3, 'Olga', 'Olsen', 14, 150, 95, true, NULL, '2010-06-01', '{"blood_type": "A-", "age": 14}'),
  (4, 'Pete', 'Peterson', 12, 140, 70, true, NULL, '2012-02-02', '{"blood_type": "B+", "age": 12}'),
  (5, 'Anna', 'Owen', 17, NULL, 91, true, NULL, '2007-09-09', NULL),
  (6, 'Bob', 'Smith', NULL, 175, NULL, NULL, 50000, NULL, NULL);

CREATE TABLE tsearch (id int PRIMARY KEY, my_tsv tsvector);
INSERT INTO tsearch VALUES
  (1, to_tsvector('english', 'It''s kind of fun to do the impossible')),
  (2, to_tsvector('english', 'But also fun to do what is possible')),
  (3, to_tsvector('english', 'Fat cats ate rats')),
  (4, to_tsvector('french', 'C''est un peu amusant de faire l''impossible'));

CREATE TYPE coordinates AS (lat numeric(8, 6), long numeric(9, 6));
CREATE TABLE countries (id int PRIMARY KEY, name text, location coordinates, languages text[]);
INSERT INTO countries VALUES
  (1, 'France', '(46.227638,2.213749)', '{fr}'),
  (5, 'Hawaii', '(19.741755,-155.844437)', '{en,haw}'),
  (7, 'Canada', '(56.130366,-106.346771)', '{en,fr}');

CREATE TABLE reservations (id int PRIMARY KEY, room text, slots int4range, during daterange);
INSERT INTO reservations VALUES
  (1, 'a', '[1,5)', '[2017-01-01,2017-01-10)'),
  (2, 'b', '[5,10)', '[2017-03-01,2017-03-05)'),
  (3, 'c', '[20,30)', '[2017-08-01,2017-08-31)');

-- Resource Embedding.
CREATE TABLE directors (id int PRIMARY KEY, first_name text, last_name text);
CREATE TABLE films (
  id int PRIMARY KEY, director_id int REFERENCES directors (id), title text, year int,
  rating numeric(3, 1), language text);
CREATE TABLE technical_specs (film_id int PRIMARY KEY REFERENCES films (id), camera text);
CREATE TABLE actors (id int PRIMARY KEY, first_name text, last_name text);
CREATE TABLE roles (
  film_id int REFERENCES films (id), actor_id int REFERENCES actors (id), character text,
  PRIMARY KEY (film_id, actor_id));
INSERT INTO directors VALUES (1, 'Christopher', 'Nolan'), (2, 'Agnès', 'Varda'), (3, 'Leo', 'McCarey');
INSERT INTO films VALUES
  (1, 1, 'Memento', 2000, 8.4, 'en'), (2, 1, 'Inception', 2010, 8.8, 'en'),
  (3, 2, 'Cléo from 5 to 7', 1962, 7.8, 'fr'), (4, 3, 'Duck Soup', 1933, 7.8, 'en');
INSERT INTO technical_specs VALUES (1, 'Panavision'), (2, 'Arri');
INSERT INTO actors VALUES
  (1, 'Guy', 'Pearce'), (2, 'Leonardo', 'DiCaprio'), (3, 'Corinne', 'Marchand'),
  (4, 'Groucho', 'Marx'), (5, 'Harpo', 'Marx'), (6, 'Chico', 'Marx'), (7, 'Zeppo', 'Marx');
INSERT INTO roles VALUES
  (1, 1, 'Leonard'), (2, 2, 'Cobb'), (3, 3, 'Cléo'),
  (4, 4, 'Rufus T. Firefly'), (4, 5, 'Pinky'), (4, 6, 'Chicolini'), (4, 7, 'Bob Roland');
CREATE VIEW nominations_view AS SELECT f.id, f.title, f.director_id FROM films f WHERE f.rating > 8;

CREATE TABLE clients (id int PRIMARY KEY, name text);
CREATE TABLE projects (id int PRIMARY KEY, name text, client_id int REFERENCES clients (id));
CREATE TABLE tasks (id int PRIMARY KEY, name text, project_id int REFERENCES projects (id), done boolean);
INSERT INTO clients VALUES (1, 'Microsoft'), (2, 'Apple');
INSERT INTO projects VALUES (1, 'Windows 7', 1), (2, 'Windows 10', 1), (3, 'IOS', 2), (4, 'OSX', 2), (5, 'Orphan', NULL);
INSERT INTO tasks VALUES
  (1, 'Design w7', 1, true), (2, 'Code w7', 1, false), (3, 'Design w10', 2, false),
  (4, 'Code w10', 2, false), (5, 'Design IOS', 3, true), (6, 'Code IOS', 3, true), (7, 'Design OSX', 4, false);

CREATE TABLE addresses (id int PRIMARY KEY, name text);
CREATE TABLE orders (
  id int PRIMARY KEY, name text,
  billing_address_id int CONSTRAINT billing REFERENCES addresses (id),
  shipping_address_id int CONSTRAINT shipping REFERENCES addresses (id));
INSERT INTO addresses VALUES (1, 'home'), (2, 'work');
INSERT INTO orders VALUES (1, 'order 1', 1, 2), (2, 'order 2', 2, 2);

CREATE TABLE staff (id int PRIMARY KEY, last_name text, supervisor_id int REFERENCES staff (id));
INSERT INTO staff VALUES (1, 'Boss', NULL), (2, 'Middle', 1), (3, 'Junior', 2);
-- Two self-referencing keys (PostgREST's organizations): a hint or the column chooses.
CREATE TABLE organizations (
  id int PRIMARY KEY, name text,
  referee int REFERENCES organizations (id), auditor int REFERENCES organizations (id));
INSERT INTO organizations VALUES
  (1, 'Referee Org', NULL, NULL), (2, 'Auditor Org', NULL, NULL),
  (3, 'Acme', 1, 2), (4, 'Umbrella', 1, 2), (5, 'Cyberdyne', NULL, 2);
-- One-to-one through a UNIQUE foreign key (not the primary key).
CREATE TABLE film_posters (id int PRIMARY KEY, film_id int UNIQUE REFERENCES films (id), url text);
INSERT INTO film_posters VALUES (1, 1, 'memento.jpg'), (2, 3, 'cleo.jpg');
-- Views over views, with renamed columns: relationships are inferred through them.
CREATE VIEW directors_view AS SELECT id AS director, last_name AS surname FROM directors;
CREATE VIEW top_nominations AS SELECT title AS name, director_id AS dir FROM nominations_view;

-- Writes.
CREATE TABLE employees (id serial PRIMARY KEY, name text UNIQUE, salary int);
INSERT INTO employees VALUES (1, 'Old employee 1', 10000), (2, 'Old employee 2', 20000);
SELECT setval('employees_id_seq', 100);
CREATE VIEW rich_employees AS SELECT id, name, salary FROM employees WHERE salary > 25000;
-- A view renaming the key column: PostgREST infers the view's primary key (staff_no) from
-- the base table's, for PUT, upserts and Location.
CREATE VIEW crew AS SELECT id AS staff_no, name, salary FROM employees;
CREATE TABLE users (id int PRIMARY KEY, last_login date, status text);
INSERT INTO users SELECT g, date '2016-12-01' + g, 'active' FROM generate_series(1, 6) g;
CREATE TABLE visitors (id serial PRIMARY KEY, name text, age int, weight int);
CREATE TABLE datasets (id serial PRIMARY KEY, source text, publication_date date, figure int, location text);
CREATE TABLE foo (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, bar text, baz int DEFAULT 100);
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price int);

CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
INSERT INTO events VALUES (1, '2023-01-01 12:00:00+00');
CREATE TABLE secrets (id int PRIMARY KEY, secret text);
REVOKE ALL ON secrets FROM anon, authenticated;

-- Functions as RPC.
CREATE FUNCTION add_them(a integer, b integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT a + b $$;
CREATE FUNCTION mult_them(param json) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT (param->>'x')::int * (param->>'y')::int $$;
CREATE FUNCTION mult_them_jsonb(jsonb) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT ($1->>'x')::int * ($1->>'y')::int $$;
CREATE FUNCTION best_films() RETURNS SETOF films LANGUAGE sql STABLE
  AS $$ SELECT * FROM films WHERE rating >= 7.8 $$;
CREATE FUNCTION film_stats() RETURNS TABLE (title text, year int) LANGUAGE sql STABLE
  AS $$ SELECT title, year FROM films $$;
CREATE FUNCTION film_years(OUT first_year int, OUT last_year int) LANGUAGE sql STABLE
  AS $$ SELECT min(year), max(year) FROM films $$;
CREATE FUNCTION film_place() RETURNS coordinates LANGUAGE sql STABLE
  AS $$ SELECT ROW(48.5, 2.25)::coordinates $$;
CREATE FUNCTION languages() RETURNS SETOF text LANGUAGE sql STABLE
  AS $$ SELECT DISTINCT language FROM films ORDER BY 1 $$;
CREATE FUNCTION numbers(n int) RETURNS SETOF int LANGUAGE sql IMMUTABLE
  AS $$ SELECT generate_series(1, n) $$;
CREATE FUNCTION tag_docs() RETURNS SETOF jsonb LANGUAGE sql STABLE
  AS $$ VALUES ('{"t": "a", "n": 2}'::jsonb), ('{"t": "b", "n": 1}') $$;
CREATE FUNCTION first_film() RETURNS films LANGUAGE sql STABLE AS $$ SELECT * FROM films WHERE id = 1 $$;
CREATE FUNCTION rental_duration(customer_id integer) RETURNS integer LANGUAGE sql STABLE
  AS $$ SELECT customer_id * 10 $$;
CREATE FUNCTION rental_duration(customer_id integer, from_date date) RETURNS integer LANGUAGE sql STABLE
  AS $$ SELECT customer_id * 100 + extract(day FROM from_date)::int $$;
CREATE FUNCTION plus_one(VARIADIC v int[]) RETURNS int[] LANGUAGE sql IMMUTABLE
  AS $$ SELECT array_agg(x + 1) FROM unnest(v) x $$;
CREATE FUNCTION just_fail() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'I refuse!' USING DETAIL = 'Pretty simple', HINT = 'There is nothing you can do.';
END $$;
CREATE FUNCTION payment_required() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE sqlstate 'PT402' USING message = 'Payment Required', detail = 'Quota exceeded', hint = 'Upgrade your plan';
END $$;
CREATE FUNCTION request_info() RETURNS json LANGUAGE sql STABLE AS $$
  SELECT json_build_object(
    'method', current_setting('request.method', true),
    'path', current_setting('request.path', true),
    'header', current_setting('request.headers', true)::json ->> 'x-golden',
    'role', current_setting('role', true),
    'sub', current_setting('request.jwt.claims', true)::json ->> 'role')
$$;
CREATE FUNCTION bad_status() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.status', 'abc', true);
  RETURN 1;
END $$;
CREATE FUNCTION created() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.status', '201', true);
  PERFORM set_config('response.headers', '[{"X-Made": "yes"}]', true);
  RETURN 1;
END $$;
CREATE FUNCTION full_name2(people) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT $1.first_name || ' ' || $1.last_name $$;
CREATE FUNCTION raise_pgrst() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE sqlstate 'PGRST' USING
    message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade your plan"}',
    detail = '{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}';
END $$;
CREATE FUNCTION raise_bad_pgrst() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE sqlstate 'PGRST' USING message = 'not json';
END $$;
CREATE FUNCTION make_item(name text) RETURNS int LANGUAGE sql VOLATILE
  AS $$ INSERT INTO items (name) VALUES (name) RETURNING id $$;

-- Computed columns (functions of a row type returning one value; full_name2(people) is
-- above) and computed relationships (functions of a row type returning rows of a relation):
-- PostgREST's "Computed Fields" and "Computed Relationships" examples.
CREATE FUNCTION birth_year(people) RETURNS int LANGUAGE sql STABLE
  AS $$ SELECT extract(year FROM $1.birth_date)::int $$;
CREATE FUNCTION full_name(directors) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT $1.first_name || ' ' || $1.last_name $$;
-- No foreign key: the functions define the relationship both ways.
CREATE TABLE premieres (id int PRIMARY KEY, location text, "date" date, film_id int);
INSERT INTO premieres VALUES
  (1, 'Cannes Film Festival', '2000-05-20', 1), (2, 'London', '2000-10-20', 1),
  (3, 'Venice Film Festival', '2010-09-01', 2);
CREATE FUNCTION film(premieres) RETURNS SETOF films ROWS 1 LANGUAGE sql STABLE
  AS $$ SELECT * FROM films WHERE id = $1.film_id $$;
CREATE FUNCTION premieres(films) RETURNS SETOF premieres LANGUAGE sql STABLE
  AS $$ SELECT * FROM premieres WHERE film_id = $1.id $$;
-- Recursive relationships through functions.
CREATE TABLE presidents (
  id int PRIMARY KEY, first_name text, last_name text, predecessor_id int UNIQUE REFERENCES presidents (id));
INSERT INTO presidents VALUES (1, 'George', 'Washington', NULL), (2, 'John', 'Adams', 1), (3, 'Thomas', 'Jefferson', 2);
CREATE FUNCTION predecessor(presidents) RETURNS SETOF presidents ROWS 1 LANGUAGE sql STABLE
  AS $$ SELECT * FROM presidents WHERE id = $1.predecessor_id $$;
CREATE FUNCTION successor(presidents) RETURNS SETOF presidents ROWS 1 LANGUAGE sql STABLE
  AS $$ SELECT * FROM presidents WHERE predecessor_id = $1.id $$;
CREATE FUNCTION supervisees(staff) RETURNS SETOF staff LANGUAGE sql STABLE
  AS $$ SELECT * FROM staff WHERE supervisor_id = $1.id $$;
CREATE FUNCTION supervisor(staff) RETURNS SETOF staff ROWS 1 LANGUAGE sql STABLE
  AS $$ SELECT * FROM staff WHERE id = $1.supervisor_id $$;
-- Adding a relationship with an overload (directors(film_schools)).
CREATE TABLE film_schools (id int PRIMARY KEY, name text);
INSERT INTO film_schools VALUES (1, 'IDHEC');
CREATE FUNCTION directors(film_schools) RETURNS SETOF directors LANGUAGE sql STABLE
  AS $$ SELECT * FROM directors WHERE id IN (2, 3) $$;

-- Multiple schemas (Accept-Profile / Content-Profile), exposed only where a file asks.
CREATE SCHEMA v2;
GRANT USAGE ON SCHEMA v2 TO anon, authenticated, service_role;
CREATE TABLE v2.projects (id int PRIMARY KEY, name text);
INSERT INTO v2.projects VALUES (1, 'v2 project');
GRANT ALL ON v2.projects TO anon, authenticated, service_role;

-- Readiness marker: the last table created.
-- Two junction tables between the same pair: a many-to-many embed needs a hint (PGRST201).
CREATE TABLE courses (id int PRIMARY KEY, name text);
CREATE TABLE students (id int PRIMARY KEY, name text);
CREATE TABLE enrollments (course_id int REFERENCES courses, student_id int REFERENCES students,
  PRIMARY KEY (course_id, student_id));
CREATE TABLE waitlist (course_id int REFERENCES courses, student_id int REFERENCES students,
  PRIMARY KEY (course_id, student_id));
INSERT INTO courses VALUES (1, 'Rust');
INSERT INTO students VALUES (1, 'Ada'), (2, 'Grace');
INSERT INTO enrollments VALUES (1, 1);
INSERT INTO waitlist VALUES (1, 2);
-- response.headers that are not a JSON array of one-key objects of strings (PGRST111).
CREATE FUNCTION bad_headers() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.headers', '[{"X-Count": 1}]', true);
  RETURN 1;
END $$;
CREATE FUNCTION bad_headers_text() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.headers', 'not json', true);
  RETURN 1;
END $$;
CREATE TABLE golden_ready (id int);
NOTIFY pgrst, 'reload schema';
