package persistence

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestAssignIDs: ids returned by a multi-row insert in any order are put
// back in insertion order (the old code trusted the driver's positional
// fill, so a shuffled RETURNING mislabelled events); impossible answers
// fail the append.
func TestAssignIDs(t *testing.T) {
	t.Parallel()
	evs := func(ids ...int64) []*Event {
		out := make([]*Event, len(ids))
		for i, id := range ids {
			out[i] = &Event{ID: id, Data: fmt.Sprint(i)}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []int64
		want []int64
	}{
		{"InOrder", []int64{7, 8, 9}, []int64{7, 8, 9}},
		{"Shuffled", []int64{9, 7, 8}, []int64{7, 8, 9}},
		{"Gaps", []int64{40, 10, 20}, []int64{10, 20, 40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := evs(tc.in...)
			require.NoError(t, assignIDs(e))
			for i, id := range tc.want {
				require.Equal(t, id, e[i].ID)
				require.Equal(t, fmt.Sprint(i), e[i].Data, "events keep their order")
			}
		})
	}
	for _, bad := range [][]int64{{5, 5}, {0, 1}, {-1, 2}} {
		require.Error(t, assignIDs(evs(bad...)), "%v", bad)
	}
}

func TestIsUniqueViolationByCode(t *testing.T) {
	t.Parallel()
	require.True(t, isUniqueViolation(fmt.Errorf("x: %w", &pgconn.PgError{Code: "23505"})))
	require.False(t, isUniqueViolation(&pgconn.PgError{Code: "23503"}))
	require.False(t, isUniqueViolation(errors.New("ERROR: duplicate key value violates unique constraint (SQLSTATE 23505)")),
		"message text is not a classification")
}
