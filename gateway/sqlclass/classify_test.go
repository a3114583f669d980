package sqlclass

import (
	"strings"
	"testing"
)

func TestSplitCounts(t *testing.T) {
	cases := []struct {
		sql  string
		want int
	}{
		{"", 0},
		{"  ;; -- nothing\n ; /* c /* nested */ */", 0},
		{"SELECT 1", 1},
		{"SELECT 1;", 1},
		{"SELECT 1; SELECT 2", 2},
		{"SELECT ';'; SELECT 2", 2},
		{`SELECT "a;b" FROM t; SELECT 2`, 2},
		{"SELECT $$ ; $$; SELECT $tag$ $$ ; $tag$", 2},
		{"SELECT E'\\';'; SELECT 2", 2},
		{"SELECT 'it''s;'; SELECT 2", 2},
		{"SELECT /* ; */ 1; -- ;\nSELECT 2", 2},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END; SELECT f()", 2},
		{"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 1", 2},
		{"BEGIN; UPDATE t SET a = 1; COMMIT", 3},
		{"SELECT (1;2)", 1},
		{"SELECT 'unterminated; SELECT 2", 1},
	}
	for _, c := range cases {
		got := Split(c.sql, nil)
		if len(got) != c.want {
			t.Errorf("Split(%q) = %d statements %+v, want %d", c.sql, len(got), got, c.want)
		}
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		sql   string
		kind  Kind
		name  string
		all   bool
		pin   Pin
		unpin Pin
	}{
		{"select * from t", Read, "", false, 0, 0},
		{"SHOW search_path", Read, "", false, 0, 0},
		{"WITH x AS (SELECT 1) SELECT * FROM x", Read, "", false, 0, 0},
		{"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", Write, "", false, 0, 0},
		{"SELECT * FROM t FOR UPDATE", Write, "", false, 0, 0},
		{"SELECT nextval('s')", Write, "", false, 0, 0},
		{"SELECT * INTO newt FROM t", Write, "", false, 0, 0},
		{"SELECT * INTO TEMP newt FROM t", Write, "", false, PinTemp, 0},
		{"EXPLAIN SELECT 1", Read, "", false, 0, 0},
		{"EXPLAIN ANALYZE DELETE FROM t", Write, "", false, 0, 0},
		{"INSERT INTO t VALUES (1)", Write, "", false, 0, 0},
		{"COPY t FROM STDIN", Write, "", false, 0, 0},
		{"COPY t TO STDOUT", Read, "", false, 0, 0},
		{"BEGIN", Begin, "", false, 0, 0},
		{"start transaction isolation level serializable", Begin, "", false, 0, 0},
		{"COMMIT", Commit, "", false, 0, 0},
		{"END", Commit, "", false, 0, 0},
		{"ROLLBACK", Rollback, "", false, 0, 0},
		{"ABORT", Rollback, "", false, 0, 0},
		{"ROLLBACK TO SAVEPOINT a", Savepoint, "", false, 0, 0},
		{"ROLLBACK TO a", Savepoint, "", false, 0, 0},
		{"COMMIT PREPARED 'x'", TwoPhase, "", false, 0, 0},
		{"PREPARE TRANSACTION 'x'", TwoPhase, "", false, 0, 0},
		{"SET search_path TO a, b", Set, "search_path", false, 0, 0},
		{"SET SESSION statement_timeout = 5", Set, "statement_timeout", false, 0, 0},
		{"set LOCAL work_mem = '1MB'", SetLocal, "work_mem", false, 0, 0},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", SetLocal, "transaction", false, 0, 0},
		{"SET TIME ZONE 'UTC'", Set, "timezone", false, 0, 0},
		{"SET myapp.user_id = 5", Set, "myapp.user_id", false, 0, 0},
		{`SET "Foo" = 1`, Set, "Foo", false, 0, 0},
		{"RESET ALL", Reset, "", true, 0, 0},
		{"RESET work_mem", Reset, "work_mem", false, 0, 0},
		{"DISCARD ALL", Discard, "all", false, 0, PinTemp | PinAdvisoryLock | PinHoldCursor},
		{"DISCARD TEMP", Discard, "temp", false, 0, PinTemp},
		{"LISTEN Chan", Listen, "chan", false, 0, 0},
		{`LISTEN "Chan"`, Listen, "Chan", false, 0, 0},
		{"UNLISTEN *", Unlisten, "", true, 0, 0},
		{"UNLISTEN chan", Unlisten, "chan", false, 0, 0},
		{"PREPARE q (int) AS SELECT $1", Prepare, "q", false, 0, 0},
		{"DEALLOCATE PREPARE q", Deallocate, "q", false, 0, 0},
		{"DEALLOCATE ALL", Deallocate, "", true, 0, 0},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", Declare, "c", false, PinHoldCursor, 0},
		{"DECLARE c CURSOR FOR SELECT 1", Declare, "c", false, 0, 0},
		{"CLOSE ALL", CursorOp, "", true, 0, PinHoldCursor},
		{"CREATE TEMP TABLE x (a int)", Write, "", false, PinTemp, 0},
		{"CREATE GLOBAL TEMPORARY TABLE x (a int)", Write, "", false, PinTemp, 0},
		{"create or replace temp view v as select 1", Write, "", false, PinTemp, 0},
		{"CREATE TABLE pg_temp.x (a int)", Write, "", false, PinTemp, 0},
		{"CREATE TABLE x (temp int)", Write, "", false, 0, 0},
		{"SELECT pg_advisory_lock(1)", Write, "", false, PinAdvisoryLock, 0},
		{"SELECT pg_catalog.pg_try_advisory_lock(1, 2)", Write, "", false, PinAdvisoryLock, 0},
		{"SELECT pg_advisory_xact_lock(1)", Write, "", false, 0, 0},
		{"SELECT pg_advisory_unlock_all()", Write, "", false, 0, PinAdvisoryLock},
		{"SELECT set_config('a.b', 'c', false)", Write, "", false, PinSessionState, 0},
		{"LOAD 'auto_explain'", Other, "", false, PinSessionState, 0},
		{"VACUUM", Write, "", false, 0, 0},
		{"frobnicate the database", Other, "", false, 0, 0},
		{"/* leading */ SELECT 1", Read, "", false, 0, 0},
	}
	for _, c := range cases {
		st := Classify(c.sql)
		if st.Kind != c.kind || st.Name != c.name || st.All != c.all || st.Pin != c.pin || st.Unpin != c.unpin {
			t.Errorf("Classify(%q) = %+v (%s), want kind %s name %q all %v pin %v unpin %v",
				c.sql, st, st.Kind, c.kind, c.name, c.all, c.pin, c.unpin)
		}
	}
}

func TestStatementText(t *testing.T) {
	src := "  SET a = 1 ; -- x\n PREPARE p AS SELECT 1 ;"
	sts := Split(src, nil)
	if len(sts) != 2 {
		t.Fatalf("got %d statements", len(sts))
	}
	if got := sts[0].Text(src); got != "SET a = 1" {
		t.Errorf("first text %q", got)
	}
	if got := sts[1].Text(src); got != "PREPARE p AS SELECT 1" {
		t.Errorf("second text %q", got)
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"SELECT 1; SELECT 2", "SELECT $$;$$", "SELECT $a$ $b$ ; $a$", "E'\\'", "/* /* */",
		"CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END", "SET a.b = 1", "U&\"d\\0061t\"", "$1", "'",
		"\"", "DECLARE c CURSOR WITH HOLD FOR SELECT 1; CLOSE ALL", "-", "/", "$", "e'", "x'", "u&'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		sts := Split(sql, nil)
		prevEnd := 0
		for _, st := range sts {
			if st.Start < prevEnd || st.End < st.Start || st.End > len(sql) {
				t.Fatalf("bad offsets %+v in %q", st, sql)
			}
			prevEnd = st.End
			// End is the end of the statement's last token.
			l := lexer{src: sql[:st.End], pos: st.Start}
			last := st.Start
			for tk := l.next(); tk.kind != tokEOF; tk = l.next() {
				last = tk.end
			}
			if last != st.End {
				t.Fatalf("statement %+v of %q: last token ends at %d", st, sql, last)
			}
			_ = st.Text(sql)
			_ = st.Kind.String()
			_ = st.Pin.String()
		}
		_ = Classify(sql)
	})
}

// BenchmarkSplit is the classifier's cost per Query or Parse on the
// gateway's per-request path: a pgbench statement, and a statement carrying
// 10 KiB of data in a string literal.
func BenchmarkSplit(b *testing.B) {
	for name, sql := range map[string]string{
		"pgbench": "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
		"10KiB":   "INSERT INTO t VALUES (1, '" + strings.Repeat("x", 10<<10) + "')",
	} {
		b.Run(name, func(b *testing.B) {
			var dst []Statement
			b.SetBytes(int64(len(sql)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				dst = Split(sql, dst[:0])
			}
		})
	}
}
