//! How domain enums are stored: as their `as_str` text, the same strings the API and the webhook send. Reading an
//! unknown string is a decode error (`StoreError::Db`), never a silent default.
//!
//! Hand-written rather than `#[derive(sqlx::Type)]` so that `domain` stays free of sqlx and each enum keeps one
//! string table (`as_str`/`FromStr`) instead of a second one in sqlx attributes.

use sqlx::any::{AnyTypeInfo, AnyValueRef};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, Database, Decode, Encode, Type};

use crate::domain::{EventKind, EventReason, Role, Status, StopReason};

macro_rules! text_column {
    ($($t:ty),+ $(,)?) => {$(
        impl Type<Any> for $t {
            fn type_info() -> AnyTypeInfo {
                <str as Type<Any>>::type_info()
            }

            fn compatible(ty: &AnyTypeInfo) -> bool {
                <str as Type<Any>>::compatible(ty)
            }
        }

        impl<'q> Encode<'q, Any> for $t {
            fn encode_by_ref(&self, buf: &mut <Any as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
                <String as Encode<'q, Any>>::encode(self.as_str().to_owned(), buf)
            }
        }

        impl<'r> Decode<'r, Any> for $t {
            fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<'r, Any>>::decode(value)?;
                text.parse::<$t>().map_err(|e| format!("{} column: {e}", stringify!($t)).into())
            }
        }
    )+};
}

text_column!(Status, StopReason, EventKind, EventReason, Role);

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::super::testing::store;
    use super::*;

    #[tokio::test]
    async fn enums_are_stored_as_their_strings_and_an_unknown_string_does_not_decode() {
        let (store, _d) = store().await;
        let row = sqlx::query("SELECT $1 AS k, $2 AS r, $3 AS role")
            .bind(EventKind::Orphan)
            .bind(EventReason::DiskSoftQuota)
            .bind(Role::Admin)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("k"), "orphan_removed");
        assert_eq!(row.get::<String, _>("r"), "disk_soft_quota");
        assert_eq!(row.get::<EventKind, _>("k"), EventKind::Orphan);
        assert_eq!(row.get::<Role, _>("role"), Role::Admin);
        let bad = sqlx::query("SELECT 'superuser' AS role").fetch_one(&store.pool).await.unwrap();
        assert!(bad.try_get::<Role, _>("role").is_err());
    }
}
