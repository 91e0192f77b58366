//! `#[udf]`: turns an ordinary Rust function into a Weir scalar function.
//!
//! Row-wise: `#[udf(description = "...")] fn multiply(a: i64, b: i64) -> i64`. Arguments
//! and results are `i32`, `i64`, `f64`, `bool`, `String`/`&str`, `Vec<f64>`, or `Option<_>`
//! of those to see and return NULLs (a NULL argument to a non-`Option` parameter gives a
//! NULL result without a call); the result may be `Result<_, String>`, whose error fails
//! the batch.
//!
//! Batch-wise: `#[udf(batch, args = "a BIGINT, b BIGINT", returns = "BIGINT")]
//! fn f(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String>`.
//!
//! Options: `name = "SQL_NAME"` (default: the function's name, upper-cased; give several
//! functions the same name for overloads), `description`, `config = "key1, key2"` (keys
//! read with `weir_udf::config`), `nondeterministic`.
//!
//! Beside the function it writes a module of the same name whose `def()` describes it;
//! `export_plugin!` lists those.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{
    FnArg, GenericArgument, ItemFn, LitStr, Pat, PathArguments, ReturnType, Type, parse_macro_input,
};

#[derive(Default)]
struct Options {
    name: Option<String>,
    description: String,
    config: Vec<String>,
    batch: bool,
    args: Option<String>,
    returns: Option<String>,
    nondeterministic: bool,
}

#[proc_macro_attribute]
pub fn udf(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        let string = |meta: &syn::meta::ParseNestedMeta| -> syn::Result<String> {
            Ok(meta.value()?.parse::<LitStr>()?.value())
        };
        if meta.path.is_ident("name") {
            options.name = Some(string(&meta)?);
        } else if meta.path.is_ident("description") {
            options.description = string(&meta)?;
        } else if meta.path.is_ident("config") {
            options.config = string(&meta)?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        } else if meta.path.is_ident("batch") {
            options.batch = true;
        } else if meta.path.is_ident("nondeterministic") {
            options.nondeterministic = true;
        } else if meta.path.is_ident("args") {
            options.args = Some(string(&meta)?);
        } else if meta.path.is_ident("returns") {
            options.returns = Some(string(&meta)?);
        } else {
            return Err(meta.error("unknown #[udf] option; expected name, description, config, batch, args, returns or nondeterministic"));
        }
        Ok(())
    });
    parse_macro_input!(attr with parser);
    let function = parse_macro_input!(item as ItemFn);
    match expand(options, function) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `Some(T)` when `ty` is `Wrapper<T>` (by the last path segment's name).
fn unwrap_generic<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

fn expand(options: Options, function: ItemFn) -> syn::Result<Tokens> {
    let ident = &function.sig.ident;
    let sql_name = options
        .name
        .clone()
        .unwrap_or_else(|| ident.to_string().to_ascii_uppercase());
    let description = &options.description;
    let config = &options.config;
    let deterministic = !options.nondeterministic;

    if options.batch {
        let (Some(args), Some(returns)) = (&options.args, &options.returns) else {
            return Err(syn::Error::new_spanned(
                &function.sig,
                "a batch #[udf] needs args = \"name TYPE, ...\" and returns = \"TYPE\"",
            ));
        };
        let pairs: Vec<(String, String)> = args
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (n, t) = s.split_once(' ').unwrap_or((s, ""));
                (n.trim().to_string(), t.trim().to_string())
            })
            .collect();
        let names = pairs.iter().map(|(n, _)| n);
        let types = pairs.iter().map(|(_, t)| t);
        return Ok(quote! {
            #function

            #[doc(hidden)]
            #[allow(non_snake_case)]
            pub mod #ident {
                pub fn def() -> ::weir_udf::ScalarDef {
                    ::weir_udf::ScalarDef {
                        name: #sql_name,
                        description: #description,
                        args: vec![#((#names, #types)),*],
                        returns: #returns,
                        variadic: false,
                        deterministic: #deterministic,
                        config: vec![#(#config),*],
                        invoke: super::#ident,
                    }
                }
            }
        });
    }

    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new(); // the SqlArg type
    let mut optional = Vec::new();
    for input in &function.sig.inputs {
        let FnArg::Typed(pat) = input else {
            return Err(syn::Error::new_spanned(
                input,
                "a #[udf] is a free function",
            ));
        };
        let name = match &*pat.pat {
            Pat::Ident(i) => i.ident.to_string(),
            other => return Err(syn::Error::new_spanned(other, "name the argument")),
        };
        arg_names.push(name);
        match unwrap_generic(&pat.ty, "Option") {
            Some(inner) => {
                arg_types.push(inner.clone());
                optional.push(true);
            }
            None => {
                arg_types.push((*pat.ty).clone());
                optional.push(false);
            }
        }
    }
    let ReturnType::Type(_, ret) = &function.sig.output else {
        return Err(syn::Error::new_spanned(
            &function.sig,
            "a #[udf] returns a value",
        ));
    };
    let (fallible, ret) = match unwrap_generic(ret, "Result") {
        Some(inner) => (true, inner),
        None => (false, &**ret),
    };
    let (ret_optional, ret_type) = match unwrap_generic(ret, "Option") {
        Some(inner) => (true, inner.clone()),
        None => (false, ret.clone()),
    };

    let n = arg_types.len();
    let arrays: Vec<_> = (0..n).map(|i| format_ident!("a{i}")).collect();
    let values: Vec<_> = (0..n).map(|i| format_ident!("v{i}")).collect();
    let indexes: Vec<_> = (0..n).collect();
    let mut checks = Vec::new();
    let mut call_args = Vec::new();
    for i in 0..n {
        let v = &values[i];
        if optional[i] {
            call_args.push(quote!(#v));
        } else {
            checks.push(quote! {
                let Some(#v) = #v else {
                    <#ret_type as ::weir_udf::SqlRet>::push(&mut out, None);
                    continue;
                };
            });
            call_args.push(quote!(#v));
        }
    }
    let call = quote!(super::#ident(#(#call_args),*));
    let call = if fallible {
        quote!(#call.map_err(|e| format!("{}: {}", #sql_name, e))?)
    } else {
        call
    };
    let pushed = if ret_optional {
        quote!(#call)
    } else {
        quote!(Some(#call))
    };

    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(non_snake_case)]
        pub mod #ident {
            #[allow(unused_imports)]
            use super::*;

            pub fn def() -> ::weir_udf::ScalarDef {
                ::weir_udf::ScalarDef {
                    name: #sql_name,
                    description: #description,
                    args: vec![#((#arg_names, <#arg_types as ::weir_udf::SqlArg>::SQL)),*],
                    returns: <#ret_type as ::weir_udf::SqlRet>::SQL,
                    variadic: false,
                    deterministic: #deterministic,
                    config: vec![#(#config),*],
                    invoke,
                }
            }

            fn invoke(
                args: &[::weir_udf::arrow::array::ArrayRef],
                rows: usize,
            ) -> ::std::result::Result<::weir_udf::arrow::array::ArrayRef, String> {
                if args.len() != #n {
                    return Err(format!("{} takes {} argument(s), got {}", #sql_name, #n, args.len()));
                }
                #(let #arrays = <#arg_types as ::weir_udf::SqlArg>::downcast(&args[#indexes])?;)*
                let mut out = <#ret_type as ::weir_udf::SqlRet>::builder(rows);
                for row in 0..rows {
                    #(let #values = <#arg_types as ::weir_udf::SqlArg>::get(&#arrays, row);)*
                    #(#checks)*
                    <#ret_type as ::weir_udf::SqlRet>::push(&mut out, #pushed);
                }
                Ok(<#ret_type as ::weir_udf::SqlRet>::finish(out))
            }
        }
    })
}
