//! `stowage-example`: Stowage with one more provider. The same commands and config file as
//! `stowage`; `providers.example` in the config file turns the example provider on.

fn main() -> std::process::ExitCode {
    let mut providers = stowage::providers::builtin();
    providers.push(stowage_provider::factory::factory::<
        stowage_provider_example::ExampleProvider,
    >());
    stowage::cli::main_with(providers)
}
